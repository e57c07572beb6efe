"""A real SMTP server for certroll's tests (aiosmtpd), on loopback only.

    python smtp_sink.py DIR [--port N] [--auth USER:PASSWORD] [--reject ADDRESS]...
                            [--tls starttls|tls --cert PEM --key PEM]

Listens on 127.0.0.1 (port N, or a free one), prints `PORT <n>` on stdout once it accepts
connections, and writes every message it receives to DIR as NNNN.eml: `X-Envelope-From:` and one
`X-Envelope-To:` per recipient, then the message as received. Each file appears whole (written
under a temporary name, then renamed). With --auth, clients must log in with USER and PASSWORD
(AUTH PLAIN/LOGIN, allowed without TLS because this is loopback). The server exits when its stdin
is closed, so a test that dies takes its server with it. Each --reject ADDRESS is refused at
RCPT TO with `550 no such user`. --tls starttls offers STARTTLS and requires it before MAIL;
--tls tls speaks TLS from the first byte; both with the certificate and key given.
"""

import argparse
import asyncio
import itertools
import logging
import os
import ssl
import sys
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory, reject):
        self.directory = directory
        self.reject = set(reject)
        # A sink restarted on the same directory numbers on after what is there.
        existing = [f for f in os.listdir(directory) if f.endswith(".eml")]
        self.counter = itertools.count(len(existing) + 1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        lines = [f"X-Envelope-From: {envelope.mail_from}"]
        lines += [f"X-Envelope-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        data = ("\r\n".join(lines) + "\r\n").encode() + content
        tmp = os.path.join(self.directory, f".{n:04}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.directory, f"{n:04}.eml"))
        return "250 OK"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth")
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--tls", choices=["starttls", "tls"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    os.makedirs(args.directory, exist_ok=True)
    # AUTH without TLS is deliberate here (loopback), and so are refused TLS handshakes: keep
    # the test output quiet about them.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    handler = Sink(args.directory, args.reject)
    kwargs = {"hostname": "sink.test"}
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs.update(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            auth_require_tls=False,
        )
    server_ssl = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            server_ssl = context
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kwargs),
        host="127.0.0.1",
        port=args.port,
        reuse_address=True,
        ssl=server_ssl,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    stop = asyncio.Event()

    def watch_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
