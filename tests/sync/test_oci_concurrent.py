"""Several hubmirror processes writing one OCI layout at once (issue 8, finding 6): a ``hubmirror sync``
and a few ``hubmirror copy`` into the same ``oci:`` layout; every tag of every process must be in its
``index.json`` afterwards (index.json updates are read-modify-write under the layout's flock)."""

from __future__ import annotations

import subprocess

from test_sync_support import HUBMIRROR, Env, many_library

from hubmirror.testing import layout as oci

ENTRIES = 8
COPIES = 4
TAGS_PER_COPY = 10


def test_sync_and_copies_into_one_oci_layout_keep_every_tag(env: Env) -> None:
    env.commit(many_library(ENTRIES))
    seeded = env.seed(repos=["many"])
    root = env.root / "oci"
    lay = root / "many"  # the sync's layout for repository `many`

    def copy_args(i: int) -> list[str]:
        tags = [f"c{i}-{k}" for k in range(TAGS_PER_COPY)]
        extra = [arg for t in tags[1:] for arg in ("--tag", t)]
        return [HUBMIRROR, "copy", f"{env.hub.host}/library/many:{i + 1}", f"oci:{lay}:{tags[0]}", *extra]

    sync = env.cli_args("--images", "many", "--concurrency", "4", dest=f"oci:{root}")
    procs = [subprocess.Popen(sync, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cli_env())]
    procs += [
        subprocess.Popen(copy_args(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cli_env())
        for i in range(COPIES)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    tags = oci.tags(lay)
    sync_tags = {tag: seeded[f"many:{tag}"] for tag in (f"{i}{s}" for i in range(1, ENTRIES + 1) for s in (".0", ""))}
    copy_tags = {f"c{i}-{k}": seeded[f"many:{i + 1}"] for i in range(COPIES) for k in range(TAGS_PER_COPY)}
    assert {t: tags.get(t) for t in sync_tags} == sync_tags  # the sync's own tags, none lost
    assert {t: tags.get(t) for t in copy_tags} == copy_tags
    assert len(oci.index_entries(lay)) == len(sync_tags) + len(copy_tags)
    for digest in set(tags.values()):
        oci.check_complete(lay, digest)
    assert oci.temp_files(root) == []
