"""A real SMTP server on loopback for flowctl's alert tests, built on aiosmtpd.

Usage: smtp_server.py --maildir DIR [--cert PEM --key PEM] [--user NAME]

It listens on 127.0.0.1 on a free port and prints `listening PORT` once it accepts connections.
Every message it accepts is written to DIR/NNNN.json before the server answers 250, so a client
that got its 250 finds the file: {"mail_from", "rcpt_tos", "subject", "to", "body", "tls", "login"}.
With --cert and --key it offers STARTTLS and requires it before MAIL. With --user it requires a
login (PLAIN or LOGIN, over TLS only) as NAME with the password in $FLOWCTL_TEST_SMTP_PASSWORD.
It exits when its standard input closes, so it never outlives the test that started it.

scripts/test.sh installs aiosmtpd into the virtualenv the tests use.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class SaveToFolder:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "to": str(message["to"]),
            "from": str(message["from"]),
            "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
            "tls": session.ssl is not None,
            "login": login,
        }
        path = os.path.join(self.folder, f"{self.count:04}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    args = parser.parse_args()
    os.makedirs(args.maildir, exist_ok=True)

    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    password = os.environ.get("FLOWCTL_TEST_SMTP_PASSWORD", "")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    handler = SaveToFolder(args.maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(
            handler,
            hostname="flowctl-test-smtp",
            tls_context=context,
            require_starttls=context is not None,
            authenticator=authenticator if args.user else None,
            auth_required=bool(args.user),
            auth_require_tls=True,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(factory, host="127.0.0.1", port=0))
    port = server.sockets[0].getsockname()[1]

    def exit_when_stdin_closes():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"listening {port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
