"""CLI: python -m monitoring.exporters <name> --config FILE --listen HOST:PORT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

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
    try:
        cfg = cfgmod.load(args.name, args.config)
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
