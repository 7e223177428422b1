"""The embedded broker (filesystem://) with processes racing on one folder, as a worker, its sweeper
and a web door do. On kombu's own filesystem transport each test here fails: the consumer takes
messages before their bytes are written (CI once lost a worker to it), and exchange tables being
created at once come out empty or written over."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from queue import Empty

from kombu import Exchange, Queue

from product_studio.config import Settings
from tasks.celery_app import make_app

# Large bodies (1 MB) widen the moment between a message file's creation and its bytes, so that on
# kombu's own transport the race shows in every run (about half the messages), not one in a thousand.
PRODUCERS, MESSAGES_EACH, BODY_PAD = 2, 100, "x" * 1_000_000
BINDERS, EXCHANGES = 6, 40


def _connection(data_dir: str):
    """A connection made as every door and worker makes one: from the Celery app of these settings."""
    return make_app(Settings(data_dir=data_dir)).connection_for_write()


def _produce(data_dir: str, producer: int) -> None:
    with _connection(data_dir) as conn:
        queue = conn.SimpleQueue("cpu")
        for i in range(MESSAGES_EACH):
            queue.put({"producer": producer, "i": i, "pad": BODY_PAD})


def _bind(data_dir: str, binder: int, start: multiprocessing.Barrier, errors: multiprocessing.Queue) -> None:
    try:
        with _connection(data_dir) as conn:
            channel = conn.default_channel
            start.wait()
            for e in range(EXCHANGES):
                Queue(f"binder-{binder}", Exchange(f"fanout-{e}", "fanout"))(channel).declare()
        errors.put(None)
    except Exception as exc:  # reported to the test, which names it
        errors.put(repr(exc))


def test_messages_published_while_a_worker_polls_arrive_whole_and_each_once(tmp_path):
    data_dir = str(tmp_path)
    producers = [multiprocessing.Process(target=_produce, args=(data_dir, p)) for p in range(PRODUCERS)]
    received, unreadable = [], []
    with _connection(data_dir) as conn:
        queue = conn.SimpleQueue("cpu")
        for p in producers:
            p.start()
        deadline = time.monotonic() + 30
        # Polled without pause, so that the consumer lists the folder while messages are being written.
        while len(received) + len(unreadable) < PRODUCERS * MESSAGES_EACH and time.monotonic() < deadline:
            try:
                message = queue.get(block=False)
            except Empty:
                continue
            except ValueError as exc:  # an empty or partial message file
                unreadable.append(repr(exc))
                continue
            received.append((message.payload["producer"], message.payload["i"]))
            message.ack()
    for p in producers:
        p.join(30)
    assert not unreadable, f"{len(unreadable)} messages read before they were written, e.g. {unreadable[0]}"
    assert sorted(received) == [(p, i) for p in range(PRODUCERS) for i in range(MESSAGES_EACH)]
    broker = tmp_path / "broker"
    assert os.listdir(broker / "queue") == [] and os.listdir(broker / "claimed") == []


def test_exchange_tables_bound_by_many_processes_at_once_keep_every_binding(tmp_path):
    data_dir = str(tmp_path)
    start, errors = multiprocessing.Barrier(BINDERS), multiprocessing.Queue()
    binders = [multiprocessing.Process(target=_bind, args=(data_dir, b, start, errors)) for b in range(BINDERS)]
    for b in binders:
        b.start()
    outcomes = [errors.get(timeout=60) for _ in binders]
    for b in binders:
        b.join(30)
    assert outcomes == [None] * BINDERS
    with _connection(data_dir) as conn:
        for e in range(EXCHANGES):
            bound = sorted(q.queue for q in conn.default_channel.get_table(f"fanout-{e}"))
            assert bound == sorted(f"binder-{b}" for b in range(BINDERS)), f"fanout-{e}"


def test_an_unreadable_message_or_table_left_by_an_older_version_is_dropped_not_fatal(tmp_path, caplog):
    """A worker stopped by one bad file would stop again at every start: it is logged and dropped."""
    broker = Path(make_app(Settings(data_dir=str(tmp_path))).conf.broker_transport_options["data_folder_in"]).parent
    # "0_" sorts before every message named by its time, so these are the first ones the consumer takes.
    bad = {"0_half-written.cpu.msg": b'{"body": "eyJ', "0_empty.cpu.msg": b"", "0_null.cpu.msg": b"null",
           "0_no-properties.cpu.msg": b'{"body": "e30="}', "0_not-utf8.cpu.msg": b"\xff\xfe"}
    for name, raw in bad.items():
        (broker / "queue" / name).write_bytes(raw)
    (broker / "control" / "written-over.exchange").write_bytes(b'[["", "", "a"]]"", "b"]]')
    with caplog.at_level(logging.WARNING, logger="tasks.embedded_broker"), _connection(str(tmp_path)) as conn:
        queue = conn.SimpleQueue("cpu")
        queue.put({"whole": True})
        message = queue.get(block=True, timeout=10)
        assert message.payload == {"whole": True}
        message.ack()
        Queue("c", Exchange("written-over", "fanout"))(conn.default_channel).declare()
        assert [q.queue for q in conn.default_channel.get_table("written-over")] == ["c"]
    for name in bad:
        assert f"dropped an unreadable message {name}" in caplog.text
    assert "written-over.exchange was unreadable" in caplog.text
    assert os.listdir(broker / "queue") == [] and os.listdir(broker / "claimed") == []


def test_a_claim_or_partial_file_left_by_a_dead_process_is_recovered(tmp_path):
    """A consumer killed between claiming and reading, a producer killed between writing and
    renaming: the next connection puts the message back and removes the partial file."""
    with _connection(str(tmp_path)) as conn:
        conn.SimpleQueue("cpu").put({"stranded": True})
    broker = tmp_path / "broker"
    [name] = os.listdir(broker / "queue")
    os.rename(broker / "queue" / name, broker / "claimed" / name)  # claimed, then the consumer died
    (broker / "queue" / f".{name}.part").write_bytes(b'{"bo')  # written in part, then the producer died
    with _connection(str(tmp_path)) as conn:
        assert os.listdir(broker / "claimed") == [name], "a claim a moment old may be in a consumer's hands"
    app = make_app(Settings(data_dir=str(tmp_path)))
    app.conf.broker_transport_options["stranded_after"] = 0  # rather than wait a minute
    time.sleep(0.05)
    with app.connection_for_write() as conn:
        message = conn.SimpleQueue("cpu").get(block=True, timeout=10)
        assert message.payload == {"stranded": True}
        message.ack()
    assert os.listdir(broker / "queue") == [] and os.listdir(broker / "claimed") == []


def test_the_worker_banner_names_the_configured_url_not_a_class(tmp_path):
    with _connection(str(tmp_path)) as conn:
        assert conn.as_uri() == "filesystem://"


def test_one_process_publishing_into_two_broker_folders_delivers_in_both(tmp_path):
    """kombu records bindings once per process: a second folder's queue was taken as bound already."""
    for name in ("first", "second"):
        with _connection(str(tmp_path / name)) as conn:
            queue = conn.SimpleQueue("cpu")
            queue.put({"folder": name})
            message = queue.get(block=True, timeout=10)
            assert message.payload == {"folder": name}
            message.ack()
