#!/bin/sh
# Container entrypoint: the first argument picks the role, the rest are that command's flags.
# Each role maps to a bin entry of package.json (test/deploy/dockerfile.test.ts checks the mapping).
set -eu
role=${1:-target}
[ $# -gt 0 ] && shift
case "$role" in
  target)  exec node /app/dist/src/target/main.js "$@" ;;
  replica) exec node /app/dist/src/replica/main.js "$@" ;;
  verify)  exec node /app/dist/src/replica/verify-main.js "$@" ;;
  ctl)     exec node /app/dist/src/ctl/main.js "$@" ;;
  *) echo "cstor: unknown role '$role' (expected target, replica, verify or ctl)" >&2; exit 64 ;;
esac
