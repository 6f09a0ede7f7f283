"""Record and request ids: UUID4 strings from os.urandom, read in chunks, never repeated by forked children."""
import os
import threading
import uuid

from wsgicliquet import ids
from wsgicliquet.resource.generators import UUID4


def test_ids_are_uuid4_strings_the_generator_accepts():
    generator = UUID4()
    for _ in range(1000):
        value = ids.uuid4()
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert generator.match(value)


def test_ids_do_not_repeat_across_buffers_and_threads():
    seen = [ids.uuid4() for _ in range(3000)]  # several 4 KiB reads
    lock = threading.Lock()

    def make() -> None:
        made = [ids.uuid4() for _ in range(1000)]
        with lock:
            seen.extend(made)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 7000


def test_a_forked_child_does_not_reuse_its_parents_buffer():
    ids.uuid4()  # the parent's buffer now holds 255 more ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.write(write, "\n".join(ids.uuid4() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    parent = [ids.uuid4() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)
