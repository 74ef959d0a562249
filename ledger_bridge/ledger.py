"""The async ledger interface of one channel: `async with Ledger(backend=...) as ledger:`.

Strategy: web3's synchronous API runs on a single worker thread owned by the ledger, so every backend is
just a `Web3` (py-evm is not thread-safe; HTTP providers block) and calls on one ledger are serialized,
which also keeps each signer's nonce in order. Transactions carry explicit gas from `GAS_BUDGETS`
(estimation costs 3-4x the time and can time out). A transaction mined with status 0 is replayed as a call
on its parent block to recover the revert data; reverts become `LedgerRevert` in words (reverts.py), and
every other foreign error becomes a `LedgerError` at this boundary.

Every await is bounded by `timeout_s`: a backend that does not answer raises `LedgerUnavailable`; the
abandoned call may still finish on the worker thread, so after a timeout treat the transaction's fate as
unknown (look the device up again) rather than resending blindly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from .artifacts import load_artifact
from .backends import LedgerBackend
from .errors import ChannelError, LedgerError, LedgerRevert, LedgerUnavailable
from .eventcodec import EventCodec
from .gas import CALL_GAS, GAS_BUDGETS, GRANT_STATUS_CELLS
from .keystore import Signer
from .model import (
    ZERO_ADDRESS,
    AnchorRecord,
    Channel,
    DeviceRecord,
    DeviceState,
    GatewayRecord,
    GrantRecord,
    GrantStatus,
    LedgerEvent,
    PolicyRecord,
    Role,
    TxOutcome,
    check_device_id,
    split_streams,
)
from .reverts import revert_data_of, revert_from_data

if TYPE_CHECKING:
    from .actor import ActorHandle

T = TypeVar("T")

class Ledger:
    """One channel's registry and authentication log on one backend.

    Use as `async with Ledger(backend=..., channel=...) as ledger`; `deploy` creates a new channel when
    none is given. Writes go through `ledger.actor(signer)`; reads are methods of the ledger itself.
    """

    def __init__(
        self,
        *,
        backend: LedgerBackend,
        channel: Channel | None = None,
        timeout_s: float = 60.0,
        max_priority_fee_wei: int = 1_000_000_000,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._backend = backend
        self._channel = channel
        self._timeout_s = timeout_s
        self._tip = max_priority_fee_wei
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._w3: Web3 | None = None
        self._chain_id = 0
        self._nonces: dict[str, int] = {}
        self._reader = ZERO_ADDRESS
        self._registry: Contract | None = None
        self._auth_log: Contract | None = None
        self._events_codec = EventCodec([])

    def __repr__(self) -> str:
        return f"Ledger(backend={self._backend.name!r}, channel={self._channel!r})"

    # ---- lifecycle of the ledger object ----
    async def __aenter__(self) -> Ledger:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        try:
            self._w3 = await self._run(self._backend.open)
            self._chain_id = await self._run(lambda: int(self.w3.eth.chain_id))
            self._reader = await self._run(self._pick_reader)
            if self._channel is not None:
                await self.attach(self._channel)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._backend.close)
        finally:
            executor.shutdown(wait=True)
            self._w3 = None

    def _pick_reader(self) -> str:
        """The `from` of calls: a node-known account where there is one (eth-tester checks that the
        caller can afford the call's gas), else the zero address, which real nodes accept, replaced by
        the first signer that transacts through this ledger."""
        try:
            accounts = self.w3.eth.accounts
        except Exception:  # nodes without personal accounts refuse eth_accounts
            return ZERO_ADDRESS
        return str(accounts[0]) if accounts else ZERO_ADDRESS

    @property
    def w3(self) -> Web3:
        if self._w3 is None:
            raise LedgerError("the ledger is not open: use `async with Ledger(...)`")
        return self._w3

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise ChannelError("no channel attached: deploy one or pass channel=")
        return self._channel

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def registry(self) -> Contract:
        if self._registry is None:
            raise ChannelError("no channel attached: deploy one or pass channel=")
        return self._registry

    @property
    def auth_log(self) -> Contract:
        if self._auth_log is None:
            raise ChannelError("no channel attached: deploy one or pass channel=")
        return self._auth_log

    # ---- channels ----
    async def deploy(self, *, admin: Signer) -> Channel:
        """Deploy a new channel (registry + authentication log) whose first admin is `admin`."""
        reg_art, log_art = load_artifact("DeviceRegistry"), load_artifact("AuthenticationLog")

        def work() -> Channel:
            reg = self.w3.eth.contract(abi=reg_art.abi, bytecode=reg_art.bytecode)
            r1 = self._send(admin, reg.constructor(admin.address), GAS_BUDGETS["deployRegistry"], "deploy")
            log = self.w3.eth.contract(abi=log_art.abi, bytecode=log_art.bytecode)
            r2 = self._send(
                admin, log.constructor(r1["contractAddress"]), GAS_BUDGETS["deployAuthLog"], "deploy"
            )
            return Channel(
                registry=str(r1["contractAddress"]),
                auth_log=str(r2["contractAddress"]),
                deployed_block=int(r1["blockNumber"]),
            )

        channel = await self._run(work)
        await self.attach(channel)
        return channel

    async def attach(self, channel: Channel) -> None:
        """Use an existing channel; refuses addresses that hold no code."""
        reg_art, log_art = load_artifact("DeviceRegistry"), load_artifact("AuthenticationLog")

        def work() -> None:
            for address in (channel.registry, channel.auth_log):
                if len(self.w3.eth.get_code(to_checksum_address(address))) == 0:
                    raise ChannelError(f"no contract at {address}")
            self._registry = self.w3.eth.contract(
                address=to_checksum_address(channel.registry), abi=reg_art.abi
            )
            self._auth_log = self.w3.eth.contract(
                address=to_checksum_address(channel.auth_log), abi=log_art.abi
            )
            self._events_codec = EventCodec([reg_art.abi, log_art.abi])

        await self._run(work)
        self._channel = channel

    def actor(self, signer: Signer) -> ActorHandle:
        """A handle that signs this channel's transactions with `signer`'s own key."""
        from .actor import ActorHandle

        return ActorHandle(self, signer)

    async def fund(self, address: str, wei: int) -> None:
        """Give an actor ether on a development chain (eth-tester, anvil)."""
        await self._run(lambda: self._backend.fund(self.w3, to_checksum_address(address), wei))

    # ---- reads ----
    async def device(self, device_id: bytes) -> DeviceRecord:
        raw = await self.call(self.registry.functions.device(check_device_id(device_id)))
        return DeviceRecord(
            device_id=device_id,
            manufacturer=raw[0],
            state=DeviceState(raw[1]),
            epoch=raw[2],
            owner=raw[3],
            pending_owner=raw[4],
            model=bytes(raw[5]),
            firmware_hash=bytes(raw[6]),
            characteristics=bytes(raw[7]),
            claim_hash=bytes(raw[8]),
            policy_id=bytes(raw[9]),
        )

    async def device_state(self, device_id: bytes) -> tuple[DeviceState, int]:
        state, epoch = await self.call(self.registry.functions.deviceState(check_device_id(device_id)))
        return DeviceState(state), int(epoch)

    async def gateway(self, gateway_id: bytes) -> GatewayRecord:
        raw = await self.call(self.registry.functions.gateway(gateway_id))
        return GatewayRecord(
            gateway_id=gateway_id,
            x25519_public_key=bytes(raw[0]),
            account=raw[1],
            operator=raw[2],
            generation=int(raw[3]),
            removed=bool(raw[4]),
        )

    async def grant(self, device_id: bytes, gateway_id: bytes) -> GrantRecord:
        raw, current = await self.call(self.registry.functions.grant(check_device_id(device_id), gateway_id))
        return GrantRecord(
            device_id=device_id,
            gateway_id=gateway_id,
            epoch=raw[0],
            key_commitment=bytes(raw[1]),
            sealed_key=bytes(raw[2]),
            current=bool(current),
            generation=int(raw[3]),
        )

    async def grant_status(
        self, device_ids: Sequence[bytes], gateway_ids: Sequence[bytes], *, per_call: int | None = None
    ) -> list[GrantStatus]:
        """Many devices' state and grants for `gateway_ids`, one view call per `per_call` devices (an owner
        re-sealing a fleet; `grant` per device and gateway is one call each)."""
        gateways = list(gateway_ids)
        per_call = per_call or max(1, GRANT_STATUS_CELLS // (1 + len(gateways)))
        out: list[GrantStatus] = []
        for start in range(0, len(device_ids), per_call):
            ids = [check_device_id(d) for d in device_ids[start : start + per_call]]
            rows = await self.call(self.registry.functions.grantStatus(ids, gateways))
            for did, (state, epoch, firmware, granted, current) in zip(ids, rows, strict=True):
                out.append(
                    GrantStatus(
                        device_id=did,
                        state=DeviceState(state),
                        epoch=int(epoch),
                        firmware_hash=bytes(firmware),
                        granted=dict(zip(gateways, map(bool, granted), strict=True)),
                        current=dict(zip(gateways, map(bool, current), strict=True)),
                    )
                )
        return out

    async def is_authorized(self, device_id: bytes, gateway_id: bytes) -> bool:
        return bool(
            await self.call(self.registry.functions.isAuthorized(check_device_id(device_id), gateway_id))
        )

    async def policy(self, policy_id: bytes) -> PolicyRecord:
        """A policy by its on-chain id (``policy_key(author, name)``, or a device's ``policy_id``)."""
        raw = await self.call(self.registry.functions.policy(policy_id))
        return PolicyRecord(
            policy_id=policy_id,
            author=raw[0],
            publish_streams=split_streams(raw[1]),
            subscribe_streams=split_streams(raw[2]),
            shared=bool(raw[3]),
        )

    async def policy_name(self, policy_id: bytes) -> bytes | None:
        """The name its author gave a policy (``PolicyDefined``'s ``name``), None if never defined."""
        topic = "0x" + policy_id.hex()
        names = [
            e.args["name"]
            for e in await self.events(device_topic=topic)
            if e.name == "PolicyDefined" and e.args.get("policyId") == policy_id
        ]
        return bytes(names[-1]) if names and isinstance(names[-1], bytes) else None

    async def device_key(self, device_id: bytes) -> tuple[bytes, bool]:
        """-> (the device's static X25519 public key, zero when none; whether a re-key is due)."""
        key, pending = await self.call(self.registry.functions.deviceKey(check_device_id(device_id)))
        return bytes(key), bool(pending)

    async def maintainer_approved(self, device_id: bytes, maintainer: str) -> bool:
        fn = self.registry.functions.maintainerApproved(
            check_device_id(device_id), to_checksum_address(maintainer)
        )
        return bool(await self.call(fn))

    async def has_role(self, role: Role, account: str) -> bool:
        return bool(
            await self.call(self.registry.functions.hasRole(role.role_id, to_checksum_address(account)))
        )

    async def anchor(self, merkle_root: bytes, *, gateway_id: bytes) -> AnchorRecord:
        """The anchor of ``merkle_root`` by ``gateway_id`` (the 32-byte on-chain id); anchors are keyed by
        (gateway, root). An unknown pair raises `LedgerRevert` ``UnknownAnchor``."""
        raw = await self.call(self.auth_log.functions.anchorOf(gateway_id, merkle_root))
        return AnchorRecord(
            merkle_root=merkle_root,
            gateway_id=bytes(raw[0]),
            count=raw[1],
            first_seq=raw[2],
            last_seq=raw[3],
            block_number=raw[4],
            timestamp=raw[5],
        )

    async def anchors(self, gateway_id: bytes) -> list[AnchorRecord]:
        """Every batch ``gateway_id`` anchored, from the chain's ``Anchored`` events, oldest first."""
        topic0 = "0x" + bytes(event_abi_to_log_topic(self._event_abi(self.auth_log, "Anchored"))).hex()
        gid = "0x" + gateway_id.hex()
        start = self.channel.deployed_block

        def work() -> list[Any]:
            query: dict[str, Any] = {
                "fromBlock": start,
                "toBlock": "latest",
                "address": self.auth_log.address,
                "topics": [topic0, gid],
            }
            return list(self.w3.eth.get_logs(query))  # type: ignore[arg-type]

        out = []
        for log in await self._run(work):
            ev = self._decode(log)
            if ev is None:
                continue
            args: dict[str, Any] = dict(ev.args)
            if bytes(args["gatewayId"]) != gateway_id:
                continue
            out.append(
                AnchorRecord(
                    merkle_root=bytes(args["merkleRoot"]),
                    gateway_id=gateway_id,
                    count=int(args["count"]),
                    first_seq=int(args["firstSeq"]),
                    last_seq=int(args["lastSeq"]),
                    block_number=ev.block_number,
                    timestamp=0,
                    transaction_hash=ev.transaction_hash,
                )
            )
        return out

    async def anchors_of_root(self, merkle_root: bytes) -> list[AnchorRecord]:
        """Every gateway's anchor of ``merkle_root`` (anchors are keyed by (gateway, root)), oldest first."""
        topic0 = "0x" + bytes(event_abi_to_log_topic(self._event_abi(self.auth_log, "Anchored"))).hex()
        start = self.channel.deployed_block

        def work() -> list[Any]:
            query = {
                "fromBlock": start,
                "toBlock": "latest",
                "address": self.auth_log.address,
                "topics": [topic0, None, "0x" + merkle_root.hex()],
            }
            return list(self.w3.eth.get_logs(query))  # type: ignore[arg-type]

        found = []
        for log in await self._run(work):
            ev = self._decode(log)
            if ev is None:
                continue
            args: dict[str, Any] = dict(ev.args)
            record = await self.anchor(merkle_root, gateway_id=bytes(args["gatewayId"]))
            found.append(dataclasses.replace(record, transaction_hash=ev.transaction_hash))
        return found

    async def next_anchor_seq(self, gateway_id: bytes) -> int:
        """The first sequence number ``gateway_id``'s next batch must start at (0: never anchored)."""
        return int(await self.call(self.auth_log.functions.nextSeq(gateway_id)))

    @staticmethod
    def _event_abi(contract: Contract, name: str) -> Any:
        return next(i for i in contract.abi if i.get("type") == "event" and i.get("name") == name)

    async def clone_alert_count(self, device_id: bytes) -> int:
        return int(await self.call(self.auth_log.functions.cloneAlertCount(check_device_id(device_id))))

    async def block_number(self) -> int:
        return await self._run(lambda: int(self.w3.eth.block_number))

    async def block_timestamp(self, number: int) -> int:
        """The timestamp (seconds since the epoch) of block ``number``."""
        return await self._run(lambda: int(self.w3.eth.get_block(number)["timestamp"]))

    async def transaction_sender(self, tx_hash: str) -> str:
        """The account that sent transaction ``tx_hash`` (who did what a history shows)."""
        return await self._run(lambda: str(self.w3.eth.get_transaction(tx_hash)["from"]))  # type: ignore[arg-type]

    async def block_hash(self, number: int) -> bytes | None:
        """The hash of block ``number`` on the chain as it is now, or None past the head (reorg checks)."""

        def work() -> bytes | None:
            from web3.exceptions import BlockNotFound

            try:
                return bytes(self.w3.eth.get_block(number)["hash"])
            except BlockNotFound:
                return None

        return await self._run(work)

    async def history(self, device_id: bytes) -> list[LedgerEvent]:
        """Every event about one device (both contracts), oldest first."""
        topic = "0x" + check_device_id(device_id).ljust(32, b"\0").hex()
        # the first indexed topic is also a gateway or policy id in some events: keep only this device's
        return [e for e in await self.events(device_topic=topic) if e.args.get("id") == device_id]

    async def events(
        self,
        *,
        from_block: int | None = None,
        to_block: int | str = "latest",
        device_topic: str | None = None,
    ) -> list[LedgerEvent]:
        """Decoded events of this channel in block order (for histories and local indexes)."""
        start = self.channel.deployed_block if from_block is None else from_block

        def work() -> list[LedgerEvent]:
            query: dict[str, Any] = {
                "fromBlock": start,
                "toBlock": to_block,
                "address": [self.registry.address, self.auth_log.address],
            }
            if device_topic is not None:
                query["topics"] = [None, device_topic]
            return [
                e
                for e in (self._decode(log) for log in self.w3.eth.get_logs(query))  # type: ignore[arg-type]
                if e is not None
            ]

        return await self._run(work)

    def _decode(self, log: Any) -> LedgerEvent | None:
        decoded = self._events_codec.decode(log)  # ~0.1 ms a log; web3's process_log ~1-2 ms
        if decoded is None:
            return None
        name, args = decoded
        return LedgerEvent(
            name=name,
            block_number=int(log["blockNumber"]),
            transaction_hash="0x" + bytes(log["transactionHash"]).hex(),
            log_index=int(log["logIndex"]),
            args=args,
        )

    # ---- plumbing shared with ActorHandle ----
    async def call(self, fn: Any, *, sender: str | None = None) -> Any:
        """Run a view function (with `from`, as some nodes require) and decode its result."""
        who = sender or self._reader
        return await self._run(lambda: fn.call({"from": who, "gas": CALL_GAS}), context=fn.fn_name)

    async def transact(self, signer: Signer, fn: Any, *, gas: int) -> TxOutcome:
        receipt = await self._run(lambda: self._send(signer, fn, gas, fn.fn_name), context=fn.fn_name)
        if self._reader == ZERO_ADDRESS:
            self._reader = signer.address  # funded, so in-process EVMs accept it as the caller of views
        return TxOutcome(
            transaction_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )

    async def block_gas_limit(self) -> int:
        return await self._run(lambda: int(self.w3.eth.get_block("latest")["gasLimit"]))

    def _mined(self, tx_hash: Any) -> bool:
        try:
            self.w3.eth.get_transaction_receipt(tx_hash)
        except Exception:
            return False
        return True

    def _send(self, signer: Signer, fn: Any, gas: int, context: str) -> Any:
        """Sign, send, wait; runs on the worker thread."""
        w3, sender = self.w3, signer.address
        nonce = self._nonces.get(sender)
        if nonce is None:
            nonce = int(w3.eth.get_transaction_count(sender, "pending"))  # type: ignore[arg-type]
        tx: dict[str, Any] = {
            "from": sender,
            "gas": gas,
            "nonce": nonce,
            "chainId": self._chain_id,
            "value": 0,
        }
        base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            tx["gasPrice"] = int(w3.eth.gas_price)
        else:
            tx["maxPriorityFeePerGas"] = self._tip
            tx["maxFeePerGas"] = 2 * int(base_fee) + self._tip
        try:
            tx = fn.build_transaction(tx)
            raw = signer.sign_transaction(tx)
        except BaseException:
            self._nonces.pop(sender, None)  # resynchronise from the node next time
            raise
        tx_hash = Web3.keccak(raw)
        try:
            w3.eth.send_raw_transaction(raw)
        except OSError as exc:
            # The request timed out or the connection broke, but the node may have taken the
            # transaction (a loaded node mining a large batch answers late): its fate is known by its
            # hash, not by this error. Guessing "lost" would reuse the nonce for the next transaction,
            # which the node then refuses ("nonce too low") once this one lands.
            try:
                w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._timeout_s, poll_latency=0.05)
            except Exception:
                self._nonces.pop(sender, None)
                raise exc from None
        except Exception:
            # A refusal, or a duplicate of a send that went through ("nonce too low" for our own
            # transaction): one look at the hash tells which.
            if not self._mined(tx_hash):
                self._nonces.pop(sender, None)
                raise
        except BaseException:
            self._nonces.pop(sender, None)
            raise
        self._nonces[sender] = nonce + 1
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._timeout_s, poll_latency=0.005)
        if receipt["status"] != 1:
            raise self._replay_revert(tx, receipt, context)
        return receipt

    def _replay_revert(self, tx: Mapping[str, Any], receipt: Any, context: str) -> LedgerError:
        if not tx.get("to"):
            return LedgerRevert(f"{context}: deployment reverted", error="")
        call = {k: tx[k] for k in ("from", "to", "data", "gas", "value")}
        try:
            self.w3.eth.call(call, int(receipt["blockNumber"]) - 1)  # type: ignore[arg-type]
        except Exception as exc:  # the revert is what we are after
            data = revert_data_of(exc)
            if data is not None:
                if not data and int(receipt["gasUsed"]) >= int(tx["gas"]):
                    return LedgerRevert(f"{context}: ran out of gas ({tx['gas']})", error="OutOfGas")
                return revert_from_data(data, context=context)
        if int(receipt["gasUsed"]) >= int(tx["gas"]):
            return LedgerRevert(f"{context}: ran out of gas ({tx['gas']})", error="OutOfGas")
        return LedgerRevert(f"{context}: transaction reverted (reason not recoverable)", error="")

    async def _run(self, work: Callable[[], T], *, context: str = "") -> T:
        if self._executor is None:
            raise LedgerError("the ledger is not open: use `async with Ledger(...)`")
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(_translated, work, context)
        )
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when the call
            # completes as the caller is cancelled, so a cancelled loop went on (a console that never
            # stopped); tests/ledger/test_honest_errors.py checks the cancellation always ends the task
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            raise LedgerUnavailable(
                f"the {self._backend.name} backend did not answer in {self._timeout_s}s"
            ) from None


@functools.cache
def backend_errors() -> tuple[type[Exception], ...]:
    """What a backend raises for reasons outside this package: the node (web3's tree, eth-tester's
    exceptions, py-evm's validation), its transport (requests, sockets, timeouts) and its storage
    (sqlite). Anything else raised under ``_translated`` is a bug and keeps its own type and traceback."""
    import sqlite3

    import requests
    from eth_tester import exceptions as tester
    from eth_utils.exceptions import ValidationError as EthValidationError
    from web3.exceptions import Web3Exception

    return (
        Web3Exception,
        tester.ValidationError,
        tester.BlockNotFound,
        tester.TransactionNotFound,
        tester.FilterNotFound,
        tester.AccountLocked,
        tester.TransactionFailed,
        EthValidationError,
        requests.RequestException,
        OSError,  # ConnectionError and friends
        TimeoutError,
        sqlite3.Error,
    )


def _translated(work: Callable[[], T], context: str) -> T:
    """Run `work`, turning backend exceptions into the package's own (on the worker thread)."""
    try:
        return work()
    except LedgerError:
        raise
    except backend_errors() as exc:
        data = revert_data_of(exc)
        if data is not None:
            raise revert_from_data(data, context=context) from None
        raise _foreign(exc) from exc


def _foreign(exc: Exception) -> LedgerError:
    import requests
    from web3.exceptions import TimeExhausted, Web3RPCError

    if isinstance(
        exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeExhausted, TimeoutError)
    ):
        return LedgerUnavailable(f"the ledger backend is unavailable ({type(exc).__name__})")
    if isinstance(exc, Web3RPCError):
        message = exc.rpc_response.get("error", {}).get("message") if exc.rpc_response else None
        return LedgerError(f"the node refused the request: {message or type(exc).__name__}")
    return LedgerError(f"ledger backend error ({type(exc).__name__}: {exc})")
