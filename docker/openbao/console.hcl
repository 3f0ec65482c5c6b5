# The meterseal console's policy (also the owner's reading commands: search, share export, dp, bill, fl).
# It may: unwrap stored DEKs (to open records: each unwrap is in OpenBao's audit log with this token), unwrap the
# index key, and sign consent and privacy-budget events. It may NOT make or wrap DEKs, rotate or re-wrap keys.
# Revoking its token stops it opening anything not already in its DEK cache (METERSEAL_KMS_CACHE_TTL) at once.
# Another mount or key name: replace "transit/" and "meterseal" in the paths below.
path "transit/decrypt/meterseal" {
  capabilities = ["update"]
}
path "transit/decrypt/meterseal-index" {
  capabilities = ["update"]
}
path "transit/sign/meterseal-ledger" {
  capabilities = ["update"]
}
path "transit/sign/meterseal-ledger-mldsa65" {
  capabilities = ["update"]
}
