"""CLI: python -m monitoring.exporters <name> --config FILE --listen HOST:PORT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from monitoring.exporters import config as cfgmod
from monitoring.exporters.core import Exporter, serve


def build(kind: str, cfg) -> Exporter:
    from monitoring.exporters.backup import BackupExporter
    from monitoring.exporters.certs import CertExporter
    from monitoring.exporters.drills import DrillExporter
    from monitoring.exporters.prober import Prober
    from monitoring.exporters.transport import TransportExporter

    classes = {"prober": Prober, "backup": BackupExporter, "drills": DrillExporter, "certs": CertExporter,
               "transport": TransportExporter}
    return classes[kind](cfg)


ARGUMENTS = "python -m monitoring.exporters arguments"


def argument_problems(args: argparse.Namespace) -> list[tuple[str, str]]:
    """What is wrong with the command line, each at its option: found before the config is read or a port bound."""
    problems: list[tuple[str, str]] = []
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        problems.append(("--listen", f"{args.listen!r} is not HOST:PORT with a port 0..65535; use e.g. "
                         "127.0.0.1:9470 ([::1]:9470 for IPv6)"))
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        given = "--tls-cert-file" if args.tls_cert_file else "--tls-key-file"
        problems.append((given, "give --tls-cert-file and --tls-key-file both (a certificate needs its key) "
                         "or neither"))
    if args.tls_client_ca_file and not args.tls_cert_file:
        problems.append(("--tls-client-ca-file", "needs --tls-cert-file/--tls-key-file: client certificates are "
                         "verified only over TLS"))
    for flag in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        if (file := getattr(args, flag)) and not Path(file).is_file():
            problems.append((f"--{flag.replace('_', '-')}", f"{file} does not exist; point it at the PEM file"))
    return problems


async def _main(exporter: Exporter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await exporter.run(stop)
    close = getattr(exporter, "aclose", None)
    if close:
        await close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m monitoring.exporters")
    ap.add_argument("name", choices=sorted(cfgmod.MODELS))
    ap.add_argument("--config", required=True)
    ap.add_argument("--listen", default="127.0.0.1:9470", help="HOST:PORT for /metrics")
    ap.add_argument("--tls-cert-file", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key-file", help="its private key (PEM)")
    ap.add_argument("--tls-client-ca-file", help="admit only clients with a certificate from this CA (PEM)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The command line and the config are checked, every problem of both at once, before a port is bound.
    problems = argument_problems(args)
    try:
        cfg = cfgmod.load(args.name, args.config)
    except cfgmod.ConfigError as err:
        if problems:
            print(f"error: {cfgmod.ConfigError(problems, ARGUMENTS)}", file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print(f"error: {cfgmod.ConfigError(problems, ARGUMENTS)}", file=sys.stderr)
        return 2
    try:
        exporter = build(args.name, cfg)
        server, _thread = serve(exporter.registry, args.listen, args.tls_cert_file, args.tls_key_file,
                                args.tls_client_ca_file)
    except (cfgmod.ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main(exporter))
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
