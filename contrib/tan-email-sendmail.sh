#!/bin/sh
# TAN helper for merchant-authd: delivers a TAN by e-mail through a local
# sendmail-compatible program (Postfix, Exim, OpenSMTPD, msmtp, nullmailer, ...).
#
# Use it as the e-mail channel of the daemon:
#
#   [merchant]
#   HELPER_EMAIL = /usr/share/merchant-authd/contrib/tan-email-sendmail.sh
#
# merchant-authd runs it (without a shell in between) with the recipient address as
# the only argument and the message containing the TAN on standard input.  The
# script adds a header and hands the mail to "$SENDMAIL -i -- ADDRESS"; the exit
# status 0 tells the daemon the mail was accepted for delivery.
#
# Environment (all optional):
#   SENDMAIL         sendmail-compatible program (default /usr/sbin/sendmail)
#   TAN_MAIL_FROM    From: header (default: left to the sendmail program)
#   TAN_MAIL_SUBJECT Subject: header (default "Your merchant backend TAN")
#
# The address is checked before use: it must look like local@domain, must not
# start with "-" and must not contain line breaks, so it can neither inject mail
# headers nor be taken for an option of the sendmail program.

set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 ADDRESS < MESSAGE" >&2
    exit 64
fi
address=$1
newline='
'
carriage=$(printf '\r')
case $address in
    -* | *"$newline"* | *"$carriage"* | *[[:space:]]* | *@*@* | @* | *@ | "")
        echo "$0: refusing unusable address" >&2
        exit 65
        ;;
    *@*) ;;
    *)
        echo "$0: refusing unusable address" >&2
        exit 65
        ;;
esac

sendmail=${SENDMAIL:-/usr/sbin/sendmail}
subject=${TAN_MAIL_SUBJECT:-Your merchant backend TAN}

{
    if [ -n "${TAN_MAIL_FROM:-}" ]; then
        printf 'From: %s\n' "$TAN_MAIL_FROM"
    fi
    printf 'To: %s\n' "$address"
    printf 'Subject: %s\n' "$subject"
    printf 'MIME-Version: 1.0\n'
    printf 'Content-Type: text/plain; charset=UTF-8\n'
    printf 'Content-Transfer-Encoding: 8bit\n'
    printf 'Auto-Submitted: auto-generated\n'
    printf '\n'
    cat
} | "$sendmail" -i -- "$address"
