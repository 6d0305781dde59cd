"""The `relaxforcing serve` command, registered onto the main Typer app."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from relaxforcing.options import CompileOption, OffloadOption, VaeTilesOption

WS_MAX_BYTES = 12 << 20
"""Largest message the page may send: a start picture (``jobs.MAX_IMAGE_BYTES``, a third larger in base64) and a
prompt of at most 2,000 characters."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (bound before the model loads, so a bad address fails fast)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port={port} must be in 1..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"--host {host!r} is not an address of this machine ({error})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 exposes the viewer to the network).")
                        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        checkpoint: Annotated[Path | None, typer.Option(help="DiT checkpoint (default: the embedded toy model).")
                              ] = None,
        wan_dir: Annotated[Path | None, typer.Option(help="Wan2.1-T2V-1.3B folder (VAE, umT5, tokenizer).")] = None,
        lora: Annotated[Path | None, typer.Option(help="LongLive LoRA to merge into the checkpoint.")] = None,
        device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
        max_seconds: Annotated[float, typer.Option(help="Longest video a page may ask for.")] = 60.0,
        max_jobs: Annotated[int, typer.Option(help="Generations running at once over all pages.")] = 2,
        compile: CompileOption = None,
        offload: OffloadOption = "auto",
        vae_tiles: VaeTilesOption = "auto",
        decoder: Annotated[str, typer.Option(
            help="The decoder a page starts with: wan (the full Wan VAE) or tae (the tiny TAEHV preview decoder, "
                 "needs --decoder-weights). Each page can pick any decoder the server holds.")] = "wan",
        decoder_weights: Annotated[Path | None, typer.Option(
            help="Weights of the tiny decoder (taew2_1.pth or .safetensors); pages can then pick it besides the Wan "
                 "VAE. Wan checkpoints only.")] = None,
    ) -> None:
        """Serve the live viewer: type a prompt, watch it stream, inspect the memory, switch prompts."""
        try:
            import uvicorn

            from relaxforcing.server.app import allowed_hosts_for, create_app
        except ImportError as error:
            raise ImportError(f"`relaxforcing serve` needs the serve extra (pip install 'relaxforcing[serve]'): "
                              f"{error}") from None
        from relaxforcing.codecs.base import parse_vae_tiles
        from relaxforcing.loaders import load_pipeline, with_vae_tiles
        from relaxforcing.server.decoders import check_decoder_options, offered_decoders

        check_decoder_options(decoder, decoder_weights, toy=checkpoint is None)  # before minutes of loading
        parse_vae_tiles(vae_tiles, "cpu")
        with listen(host, port) as listener:
            pipe = load_pipeline(checkpoint=checkpoint, wan_dir=wan_dir, lora=lora, device=device, compile=compile,
                                 offload=offload)
            with_vae_tiles(pipe, vae_tiles)
            decoders, default = offered_decoders(pipe, decoder, decoder_weights)  # each page picks one of them
            hosts = allowed_hosts_for(host)
            web = create_app(pipe, decoders=decoders, default_decoder=default, allowed_hosts=hosts,
                             max_seconds=max_seconds, max_jobs=max_jobs)
            shown = f"[{host}]" if ":" in host else host
            print(f"relaxforcing viewer ({pipe.name} model; decoders: {', '.join(decoders)}, default {default}) on "
                  f"http://{shown}:{port}/  (Ctrl+C to stop)")
            if hosts is None:
                print(f"warning: listening on {host} accepts any Host header; anyone on the network can generate")
            config = uvicorn.Config(web, log_level="warning", ws_max_size=WS_MAX_BYTES)
            uvicorn.Server(config).run(sockets=[listener])
