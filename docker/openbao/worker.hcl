# The meterseal worker's policy (METERSEAL_KMS=openbao://HOST:PORT/transit/meterseal).
# It may: have the service make new DEKs (each returned with its wrapped form), unwrap the index key (tokens,
# record ids, subject keys), and sign checkpoints. It may NOT unwrap a stored DEK (no transit/decrypt/meterseal):
# a compromised worker seals new readings but cannot open the store.
# Another mount or key name: replace "transit/" and "meterseal" in the paths below.
path "transit/datakey/plaintext/meterseal" {
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
