#!/bin/sh
# TAN helper for merchant-authd, for development and tests only: instead of
# sending anything, it appends the message (with the address it was meant for) to
# a file, where a developer or a test reads the TAN.
#
# Use it for either channel:
#
#   [merchant]
#   HELPER_EMAIL = /path/to/contrib/tan-to-file.sh
#   HELPER_SMS = /path/to/contrib/tan-to-file.sh
#
# merchant-authd runs it (without a shell in between) with the address (e-mail
# address or phone number) as the only argument and the message on standard
# input.  Each delivery is appended as one record:
#
#   To: ADDRESS
#   <message lines>
#   <empty line>
#
# The file is MERCHANT_AUTHD_TAN_FILE if set, otherwise merchant-authd-tans.txt in
# $XDG_RUNTIME_DIR (or in /tmp when that is unset).  It is created readable by its
# owner only, since it holds live TANs.  Never use this helper in production.

set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 ADDRESS < MESSAGE" >&2
    exit 64
fi

file=${MERCHANT_AUTHD_TAN_FILE:-${XDG_RUNTIME_DIR:-/tmp}/merchant-authd-tans.txt}
message=$(cat)
umask 077
# One printf, so that records of helpers running at the same time do not mix.
printf 'To: %s\n%s\n\n' "$1" "$message" >>"$file"
