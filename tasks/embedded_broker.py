"""The embedded broker: kombu's filesystem transport, made safe for processes racing on one folder.

kombu's filesystem transport (5.7) creates a message file and then writes it, and a consumer takes
any file it lists, so a worker polling the folder can take a message before its bytes are there.
It then fails to parse an empty file and the worker stops ("Unrecoverable error: JSONDecodeError",
kombu issue #1551; seen in CI when the sweeper and a web door published while a worker polled).
Its exchange tables (the control folder) are created by truncating open("wb") before the lock is
taken, so two processes binding at once read an empty table or write one over the other.

Here a message is written whole under a name consumers ignore (a leading dot) and renamed into
place: a rename within one folder is atomic on POSIX. A consumer claims a message by renaming it
into the claim folder beside the queue (one filesystem, so two consumers cannot both take it and
nothing is copied), then reads and removes it; a claim (or a partial file) left by a process that
died in between is put back (or removed) by the next channel opened on the folder. A file that is
not a message a worker can take (one half written by an older version that crashed) is logged
and dropped instead of stopping the worker: the database, not the broker, says what is left to
do, and the sweeper re-enqueues that work.
An exchange table is created without truncating and read and written only under its lock, and
the record of what is bound is kept per broker folder, not per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

# A claim is read and removed, a partial file renamed, within milliseconds: one left this long (s)
# belongs to a process that died in between.
STRANDED_AFTER_S = 60


def _message_name(queue: str) -> str:
    # kombu's naming (creation time in ms first, so a sorted listing is roughly first in, first
    # out), so that a worker of an older version sharing the folder still finds these messages.
    return f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"


def _stranded(folder: str, cutoff: float, wanted):
    """(path, name) of the files in `folder` whose names are `wanted` and untouched since `cutoff`
    (st_ctime: a claim's rename sets it, where a message's own age, its mtime, says nothing)."""
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and wanted(entry.name) and entry.stat().st_ctime < cutoff:
                yield entry.path, entry.name


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")


def _is_message_of(name: str, queue: str) -> bool:
    return not name.startswith(".") and name.partition(".")[2] == f"{queue}.msg"


class Channel(filesystem.Channel):
    """A filesystem channel whose messages are never seen half written (see the module's docstring).

    Transport options as kombu's: `data_folder_in`, `data_folder_out`, `control_folder`, and
    `processed_folder`, here the claim folder (by default `claimed` beside the queue folder; it must
    be on the queue folder's filesystem).

    Raises:
        kombu.exceptions.ChannelError: a message cannot be written or a claimed one read (OSError).
    """

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self._recover_stranded()

    def _put(self, queue, payload, **kwargs):
        name = _message_name(queue)
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"cannot add message {name!r} to the broker folder {self.data_folder_out}") from exc

    def _get(self, queue):
        for name in sorted(os.listdir(self.data_folder_in)):
            if not _is_message_of(name, queue):
                continue
            claimed = os.path.join(self.claim_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
                with open(claimed, "rb") as f:
                    raw = f.read()
                os.remove(claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            except OSError as exc:
                raise ChannelError(f"cannot claim the message {name!r} from {self.data_folder_in}") from exc
            message = self._message_or_none(raw)
            if message is not None:
                return message
            log.warning("dropped an unreadable message %s (%d bytes) from the embedded broker; the sweeper "
                        "re-enqueues whatever work it stood for", name, len(raw))
        raise Empty()

    def _message_or_none(self, raw: bytes) -> dict | None:
        """The message in a file's bytes, or None for bytes no worker could deliver (a worker fed
        them would stop: kombu builds the message outside any handler)."""
        try:
            message = loads(bytes_to_str(raw))
            self.Message(message, channel=self)
            if not isinstance(message["properties"].get("delivery_info"), dict):
                return None
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
            return None
        return message

    @cached_property
    def claim_folder(self) -> str:
        # Beside the queue folder (one filesystem, so claiming is a rename), unless set.
        return self.transport_options.get("processed_folder") or os.path.join(
            os.path.dirname(os.path.abspath(self.data_folder_in)), "claimed")

    def _recover_stranded(self) -> None:
        """Put back claimed messages whose consumer died before reading them, and remove partial
        files whose producer died before renaming them: those untouched for `stranded_after` (s, the
        transport option; STRANDED_AFTER_S by default)."""
        cutoff = time.time() - float(self.transport_options.get("stranded_after", STRANDED_AFTER_S))
        os.makedirs(self.claim_folder, exist_ok=True)
        for path, name in _stranded(self.claim_folder, cutoff, lambda n: not n.startswith(".")):
            with contextlib.suppress(FileNotFoundError):  # another process put it back first
                os.rename(path, os.path.join(self.data_folder_in, name))
                log.warning("put back the message %s, claimed by a consumer that stopped before reading it", name)
        for path, _ in _stranded(self.data_folder_out, cutoff, _is_partial):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            with open(file, "rb") as f:
                filesystem.lock(f, filesystem.LOCK_SH)
                try:
                    return _bindings(f.read(), file)
                finally:
                    filesystem.unlock(f)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"cannot read the exchange table {file}") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._bindings_to_update(exchange) as bindings:
            if binding not in bindings:
                bindings.insert(0, binding)

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        # The virtual channel's bookkeeping only: kombu's filesystem _delete then reads a table that
        # another process may be creating.
        super(filesystem.Channel, self)._delete(queue, exchange, routing_key, pattern, *args, **kwargs)
        if not self._exchange_file(exchange).exists():
            return
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._bindings_to_update(exchange) as bindings:
            if binding in bindings:
                bindings.remove(binding)

    @contextlib.contextmanager
    def _bindings_to_update(self, exchange):
        """The exchange's bindings (a list to change in place), read and written back under its lock.

        The table is created without truncating and only ever written under the exclusive lock, so
        an empty table is one nobody has bound to yet, never one being written.
        """
        file = self._exchange_file(exchange)
        try:
            self.control_folder.mkdir(exist_ok=True)
            f = os.fdopen(os.open(file, os.O_RDWR | os.O_CREAT, 0o644), "r+b", buffering=0)
        except OSError as exc:
            raise ChannelError(f"cannot open the exchange table {file}") from exc
        with f:
            filesystem.lock(f, filesystem.LOCK_EX)
            try:
                before = _bindings(f.read(), file)
                bindings = list(before)
                yield bindings
                if bindings != before:
                    f.seek(0)
                    f.truncate()
                    f.write(str_to_bytes(dumps(bindings)))
            finally:
                filesystem.unlock(f)


def _bindings(raw: bytes, file) -> list:
    if not raw.strip():
        return []
    try:
        return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(raw))]
    except (ValueError, TypeError, UnicodeDecodeError):
        # Written over by two processes at once under kombu's own transport: start it afresh (the
        # bindings are the pidbox queues of running workers, which bind again when they restart).
        log.warning("the exchange table %s was unreadable (%d bytes); starting it afresh", file, len(raw))
        return []


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`; select it with Celery's `broker_transport`.

    kombu keeps one record of declared bindings for the whole process, so once a queue is bound in
    one broker folder it is taken as bound in every other: a process that opens a second data folder
    (a test, a command run for another installation) never writes that folder's exchange table and
    its messages are routed nowhere. Here the record is kept per control folder.
    """

    Channel = Channel
    _states: dict[str, virtual.BrokerState] = {}

    can_parse_url = True  # "filesystem://" holds nothing to parse; and see as_uri

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        folder = os.path.realpath(client.transport_options.get("control_folder", "control"))
        self.state = self._states.setdefault(folder, virtual.BrokerState())

    def as_uri(self, uri, include_password=False, mask="**"):
        """The configured URL (`filesystem://`), not this class's import path, in the worker's banner."""
        return uri
