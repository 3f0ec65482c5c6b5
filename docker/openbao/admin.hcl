# The key administrator's policy: `meterseal keys init --kms`, `keys rotate`, `keys rewrap`, `keys migrate`,
# `keys region add|export|grant`. It may create, read, rotate and import the meterseal keys, make and wrap DEKs,
# re-wrap and unwrap them (migration opens every record to check it), sign, enable the transit engine at its
# mount and list the audit devices (OpenBao 2.x declares them in the server's configuration file, not through
# its API). Use it for those commands only, never for a long-running process.
# Another mount or key name: replace "transit/" and "meterseal" in the paths below.
path "sys/mounts/transit" {
  capabilities = ["create", "read", "update"]
}
path "sys/audit" {
  capabilities = ["read", "sudo"]
}
path "transit/wrapping_key" {
  capabilities = ["read"]
}
path "transit/keys/meterseal*" {
  capabilities = ["create", "read", "update"]
}
path "transit/datakey/plaintext/meterseal*" {
  capabilities = ["update"]
}
path "transit/encrypt/meterseal*" {
  capabilities = ["update"]
}
path "transit/decrypt/meterseal*" {
  capabilities = ["update"]
}
path "transit/rewrap/meterseal*" {
  capabilities = ["update"]
}
path "transit/sign/meterseal-ledger*" {
  capabilities = ["update"]
}
