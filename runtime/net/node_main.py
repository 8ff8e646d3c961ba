"""``swarm-tune node`` and ``swarm-tune relay``: settings in, a running process out.

Why this module is only wiring: every rule lives elsewhere (settings validation in
``ops.settings``, the protocol in ``protocol``, learning in ``training``, bytes in ``net`` and
``wire``, the event loop in ``driver``). What is decided here is the *process* contract that
operators, docker-compose and the multi-process tests rely on:

* stdout carries exactly one machine-readable line once the node listens:
  ``SWARM_READY peer_id=<id> multiaddr=<addr>`` (logs go to stderr, JSON when not a TTY);
* SIGTERM / SIGINT stop the node cleanly: the open round is abandoned, peers get a Goodbye,
  a final checkpoint is written atomically under a shielded cancel scope, exit code 0.
  A second signal only hurries the network side; the checkpoint write is never cut;
* on start the node resumes from its latest valid checkpoint (parameters and round number)
  and then asks peers for the swarm's state, so a restarted node rejoins the current round
  instead of counting from 0;
* configuration errors exit 2 with one line per bad setting, never a traceback.

Heavy imports (torch, transformers, libp2p) happen inside the commands so that
``swarm-tune --help`` stays fast.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from swarm_tune.runtime.net.config import NetConfig
    from swarm_tune.runtime.ops.settings import NodeSettings
    from swarm_tune.runtime.protocol.config import ProtocolConfig
    from swarm_tune.runtime.wire.identity import Identity

__all__ = [
    "READY_PREFIX",
    "build_identity",
    "build_net_config",
    "build_protocol_config",
    "node",
    "relay",
    "run_node",
    "run_relay",
]

READY_PREFIX = "SWARM_READY"
KEY_FILE_NAME = "node.key"

EnvFileOpt = Annotated[
    Path | None, typer.Option("--env-file", help="Read this .env file instead of ./.env.")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")]
PortOpt = Annotated[int | None, typer.Option("--listen-port", help="TCP port (0 = any).")]
HostOpt = Annotated[str | None, typer.Option("--listen-host", help="IP address to listen on.")]
BootOpt = Annotated[
    str | None, typer.Option("--bootstrap", help="Comma-separated peer multiaddrs.")
]
RoundsOpt = Annotated[int | None, typer.Option("--max-rounds", help="0 = run until a signal.")]
CkptOpt = Annotated[Path | None, typer.Option("--checkpoint-dir", help="Checkpoint folder.")]
NodeIdOpt = Annotated[str | None, typer.Option("--node-id", help="Name in logs and metrics.")]


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _load(env_file: Path | None, **overrides: Any) -> NodeSettings:
    from swarm_tune.runtime.net.errors import ConfigError
    from swarm_tune.runtime.ops.settings import SettingsError, env_name, load_settings

    try:
        settings = load_settings(env_file=env_file, **_overrides(**overrides))
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        build_net_config(settings)  # the network limits' own checks (NetConfig: one place)
    except ConfigError as exc:
        name, _, problem = str(exc).partition(" ")  # "<field> must be ..."
        typer.echo(f"{env_name(name)}: {problem}", err=True)
        raise typer.Exit(2) from None
    return settings


# -- settings -> component configs --------------------------------------------------------


def build_protocol_config(s: NodeSettings) -> ProtocolConfig:
    """Every protocol parameter as the settings give it (one schema: protocol/config.py)."""
    from swarm_tune.runtime.ops.settings import protocol_config

    return protocol_config(s)


def build_net_config(s: NodeSettings, *, relay: bool = False) -> NetConfig:
    """The network driver's config; raises ``ConfigError`` for a limit NetConfig refuses."""
    import dataclasses

    from swarm_tune.runtime.net.config import NetConfig
    from swarm_tune.runtime.ops.settings import NET_LIMITS

    net = NetConfig(
        enable_mdns=s.enable_mdns,
        enable_dht=s.enable_dht,
        enable_relay=relay or s.relay_mode or s.relay_client,
        relay_hop=relay or s.relay_mode,
        enable_dcutr=s.enable_dcutr,
    )
    # Limits left empty keep NetConfig's default (its one definition).
    limits = {name: getattr(s, name) for name in NET_LIMITS if getattr(s, name) is not None}
    return dataclasses.replace(net, **limits)


def build_identity(s: NodeSettings) -> Identity:
    """From SWARM_NODE_KEY_SEED, SWARM_NODE_KEY_FILE, or a key persisted in the checkpoint
    dir (created 0600 on first start, so a restarted node keeps its peer id)."""
    from swarm_tune.runtime.ops.peer_id import parse_seed_hex
    from swarm_tune.runtime.wire.identity import Identity

    if s.node_key_seed is not None:
        return Identity.from_seed(parse_seed_hex(s.node_key_seed.get_secret_value()))
    path = s.node_key_file or Path(s.checkpoint_dir) / KEY_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return Identity.load_or_create(path)


def run_seed(run_id: str) -> int:
    """Model-init seed shared by every node of a run (same start point everywhere)."""
    return zlib.crc32(run_id.encode())


def _listen_addr(s: NodeSettings) -> str:
    proto = "ip6" if ":" in s.listen_host else "ip4"
    return f"/{proto}/{s.listen_host}/tcp/{s.listen_port}"


def _announce(peer_id: str, addrs: list[str]) -> None:
    print(f"{READY_PREFIX} peer_id={peer_id} multiaddr={addrs[0] if addrs else ''}", flush=True)


async def _signal_stop(stop: Any, hurry: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: cancel the network side right away."""
    with _signals() as received:
        count = 0
        async for _ in received:
            count += 1
            stop.set()
            if count > 1:
                hurry()


def _signals() -> Any:
    import trio

    return trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)


# -- node ---------------------------------------------------------------------------------


async def run_node(s: NodeSettings) -> int:
    """Run one training node until max_rounds or a signal; returns the exit code."""
    import trio

    from swarm_tune.runtime.adversary.attacks import flip_labels
    from swarm_tune.runtime.compression.codecs import CompressionError
    from swarm_tune.runtime.net.adversary import Adversary
    from swarm_tune.runtime.net.driver import DriverConfig, NodeDriver
    from swarm_tune.runtime.net.node import open_net_node
    from swarm_tune.runtime.net.relays import keep_relay_slots
    from swarm_tune.runtime.ops.checkpoint import (
        CheckpointError,
        latest_checkpoint,
        load_checkpoint,
        load_node_state,
        save_checkpoint,
        save_node_state,
    )
    from swarm_tune.runtime.ops.logging import get_logger
    from swarm_tune.runtime.protocol.node import ProtocolNode
    from swarm_tune.runtime.protocol.tensors import ModelSpec
    from swarm_tune.runtime.training import SHIPPED_CORPUS, LearnerStateError, build_learner
    from swarm_tune.runtime.training.bridge import LearnerBridge
    from swarm_tune.runtime.training.data import DataError
    from swarm_tune.runtime.training.layer_shard import SHARD_KEY, LayerShardError, swarm_id
    from swarm_tune.runtime.training.lora import LORA_KEY, LoraError

    log = get_logger("swarm_tune.node")
    pcfg = build_protocol_config(s)
    if s.model_overrides:
        log.warning("node.model_overrides_ignored", overrides=s.model_overrides)
    seed = run_seed(s.run_id)
    shard = s.layer_shard()
    try:
        learner = await trio.to_thread.run_sync(
            lambda: build_learner(
                s.model_name,
                s.dataset or SHIPPED_CORPUS,
                num_shards=s.num_shards,
                shard_index=s.shard_index,
                device=s.device,
                seed=seed,
                batch_size=s.batch_size,
                lr=s.learning_rate,
                local_steps=s.local_steps,
                diloco=s.diloco(),
                text_column=s.dataset_text_field,
                lora=s.lora(),
                layer_shard=shard,
            )
        )
    except DataError as exc:  # bad dataset, column or shard: refused before anything is written
        print(f"error: SWARM_DATASET: {exc}", file=sys.stderr)
        return 2
    except LoraError as exc:  # e.g. a target module the model lacks
        print(f"error: SWARM_LORA_TARGET_MODULES: {exc}", file=sys.stderr)
        return 2
    except LayerShardError as exc:  # e.g. more layer shards than the model has blocks
        print(f"error: SWARM_MODEL_SHARD_TOTAL: {exc}", file=sys.stderr)
        return 2
    identity = build_identity(s)  # after the data check: a refused node leaves no key file
    ckpt_dir = Path(s.checkpoint_dir)
    start_round = 0
    resumed = False
    bridge = LearnerBridge(learner, pcfg)
    info = latest_checkpoint(ckpt_dir, s.run_id)
    if info is not None:
        try:
            tensors, meta = load_checkpoint(
                info,
                allowed_dir=ckpt_dir,
                expected_run_id=s.run_id,
                expected_model=s.model_name,
                spec=learner.spec(),
            )
            learner.load_state(tensors)
            start_round = meta.round
            resumed = True
            log.info("node.resumed", round=start_round, checkpoint=str(info.tensor_path))
        except CheckpointError as exc:  # keep the file (evidence), start fresh
            log.error("node.checkpoint_unusable", path=str(info.meta_path), error=str(exc))
    if resumed:  # the residual and outer momentum saved with that checkpoint, if any
        try:
            bridge.load_node_state(load_node_state(ckpt_dir, s.run_id, start_round))
        except (CheckpointError, CompressionError, LearnerStateError) as exc:
            log.error("node.node_state_unusable", error=str(exc))

    lora = s.lora()
    # Adapters-only checkpoints say how to merge them back into the base (reconstruct).
    model_extra = {} if lora is None else {LORA_KEY: lora.record(seed)}
    # A layer shard's checkpoint holds its slice only; reconstruct needs every slice.
    if shard.total > 1:
        model_extra[SHARD_KEY] = shard.record()

    def checkpoint(round_: int, extra: dict[str, Any]) -> Path:
        path = save_checkpoint(
            ckpt_dir, s.run_id, round_, learner.parameters(), s.model_name, extra | model_extra
        )
        save_node_state(ckpt_dir, s.run_id, round_, bridge.node_state())
        return path

    params = learner.parameters()
    import random

    protocol = ProtocolNode(
        identity.peer_id,
        pcfg,
        ModelSpec.from_tensors(params),
        learner.dataset_size,
        random.Random(f"{s.run_id}/{identity.peer_id}"),
        start_round=start_round,
        address=_own_address(s.listen_host),
    )
    adversary = Adversary(s.adversary, s.adversary_strength, seed=seed ^ s.shard_index)
    if adversary.active:
        log.warning("node.adversary_enabled", mode=s.adversary, strength=s.adversary_strength)
    if s.adversary == "label_flip":
        learner.poison_labels(flip_labels)
    dcfg = DriverConfig(
        run_id=swarm_id(s.run_id, shard),  # one swarm per layer shard (layer_shard.py)
        max_rounds=s.max_rounds,
        checkpoint_every=s.checkpoint_every_rounds,
        bootstrap=tuple(s.bootstrap_peers),
        join_timeout=max(2 * pcfg.heartbeat_interval, min(pcfg.round_timeout, 30.0)),
        redial_interval=max(1.0, pcfg.heartbeat_interval),
        discovery_interval=max(10.0, 2 * pcfg.heartbeat_interval),
    )
    stop = trio.Event()
    async with trio.open_nursery() as outer:
        net_scope = trio.CancelScope()
        outer.start_soon(_signal_stop, stop, net_scope.cancel)
        with net_scope:
            async with open_net_node(
                identity.seed, [_listen_addr(s)], s.bootstrap_peers, build_net_config(s)
            ) as net:
                log.info("node.peer_id", peer_id=net.peer_id)
                log.info("node.multiaddr", multiaddrs=net.multiaddrs)
                _announce(net.peer_id, net.multiaddrs)
                direct = protocol.dial = dial_hint(net.told_multiaddrs)
                driver = NodeDriver(
                    protocol,
                    net,
                    bridge,
                    identity,
                    dcfg,
                    checkpoint=checkpoint,
                    adversary=adversary,
                    applied_round=start_round,
                )
                async with trio.open_nursery() as side:
                    if s.relay_addrs:  # behind a NAT: peers are told the relayed address
                        net.relayed = []  # and the DHT never a private one

                        def advertise(relayed: list[str]) -> None:
                            protocol.dial = relayed[0] if relayed else direct
                            net.relayed = relayed
                            log.info("node.dial_hint", address=protocol.dial)

                        await side.start(
                            keep_relay_slots,
                            net,
                            s.relay_addrs,
                            dcfg.redial_interval,
                            advertise,
                        )
                    if s.metrics_port:  # /metrics, /api/state, dashboard: owned by the node
                        from swarm_tune.runtime.net.monitor_server import run_node_monitor

                        await side.start(
                            partial(
                                run_node_monitor,
                                driver,
                                node_id=s.node_id,
                                host=s.listen_host,
                                port=s.metrics_port,
                                history_dir=ckpt_dir,
                            )
                        )
                    await driver.run(stop)
                    side.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    return 0


# -- relay --------------------------------------------------------------------------------


async def run_relay(s: NodeSettings) -> int:
    """P2P only: a stable, dialable peer that relays and helps others find each other."""
    import trio

    from swarm_tune.runtime.net.node import open_net_node
    from swarm_tune.runtime.ops.logging import get_logger

    log = get_logger("swarm_tune.relay")
    identity = build_identity(s)
    stop = trio.Event()
    async with trio.open_nursery() as outer:
        net_scope = trio.CancelScope()
        outer.start_soon(_signal_stop, stop, net_scope.cancel)
        with net_scope:
            async with open_net_node(
                identity.seed,
                [_listen_addr(s)],
                s.bootstrap_peers,
                build_net_config(s, relay=True),
            ) as net:
                log.info("relay.peer_id", peer_id=net.peer_id)
                log.info("relay.multiaddr", multiaddrs=net.multiaddrs)
                _announce(net.peer_id, net.multiaddrs)
                async with trio.open_nursery() as inner:

                    async def drain_incoming() -> None:
                        # A relay takes no part in training; unread messages would only
                        # back-pressure their senders.
                        async for inc in net.incoming:
                            log.debug("relay.ignored_message", peer=inc.peer_id)

                    async def log_peers() -> None:
                        async for ev in net.peer_events:
                            log.info("relay.peer_event", kind=type(ev).__name__, peer=ev[0])

                    inner.start_soon(drain_incoming)
                    inner.start_soon(log_peers)
                    await stop.wait()
                    inner.cancel_scope.cancel()
        log.info("relay.stopped")
        outer.cancel_scope.cancel()
    return 0


# -- commands -----------------------------------------------------------------------------


def _run(main: Callable[[NodeSettings], Any], s: NodeSettings) -> None:
    import trio

    from swarm_tune.runtime.ops.logging import configure_logging

    configure_logging(s)
    code = trio.run(main, s)
    sys.stdout.flush()
    raise typer.Exit(int(code))


def node(
    env_file: EnvFileOpt = None,
    device: DeviceOpt = None,
    listen_host: HostOpt = None,
    listen_port: PortOpt = None,
    bootstrap: BootOpt = None,
    max_rounds: RoundsOpt = None,
    checkpoint_dir: CkptOpt = None,
    node_id: NodeIdOpt = None,
) -> None:
    """Run a training node from SWARM_* settings (options override them)."""
    s = _load(
        env_file,
        device=device,
        listen_host=listen_host,
        listen_port=listen_port,
        bootstrap_peers=bootstrap,
        max_rounds=max_rounds,
        checkpoint_dir=checkpoint_dir,
        node_id=node_id,
    )
    if s.relay_mode:
        _run(run_relay, s)
    _run(run_node, s)


def relay(
    env_file: EnvFileOpt = None,
    listen_host: HostOpt = None,
    listen_port: PortOpt = None,
    bootstrap: BootOpt = None,
    node_id: NodeIdOpt = None,
) -> None:
    """Run a relay: P2P only, no model; prints its multiaddr for others to bootstrap from."""
    s = _load(
        env_file,
        listen_host=listen_host,
        listen_port=listen_port,
        bootstrap_peers=bootstrap,
        node_id=node_id,
    )
    _run(run_relay, s)


def dial_hint(multiaddrs: list[str]) -> str:
    """The address peers pass on for us (peer exchange): the first specific one (the host
    advertises interface addresses for a wildcard listen address, host.py); a bare
    ``/ip4/0.0.0.0/`` one is completed by each receiver with the IP it sees us at."""
    specific = [a for a in multiaddrs if "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a]
    wildcard = [a for a in multiaddrs if a.startswith("/ip4/0.0.0.0/")]
    return (specific or wildcard or [""])[0]


def _own_address(listen_host: str) -> str:
    """Our address for the subnet cap, when the listen host names one (not 0.0.0.0 / ::)."""
    try:
        return "" if ipaddress.ip_address(listen_host).is_unspecified else listen_host
    except ValueError:
        return ""
