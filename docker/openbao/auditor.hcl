# The auditor's policy: verify only. It may read the checkpoint keys' public halves (to confirm the vkeys in the
# keystore file are the service's) and ask the service to verify a signature; it can neither sign nor unwrap.
# `meterseal ledger verify` needs no token at all: the vkeys are public; with this token it also checks them.
# Another mount or key name: replace "transit/" and "meterseal" in the paths below.
path "transit/keys/meterseal-ledger" {
  capabilities = ["read"]
}
path "transit/keys/meterseal-ledger-mldsa65" {
  capabilities = ["read"]
}
path "transit/verify/meterseal-ledger" {
  capabilities = ["update"]
}
path "transit/verify/meterseal-ledger-mldsa65" {
  capabilities = ["update"]
}
