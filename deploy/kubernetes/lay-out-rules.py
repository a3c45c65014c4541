#!/usr/bin/env python3
"""Lay out the rendered manifests' rules volume the way the kubelet does, to check it.

Usage: lay-out-rules.py RENDERED.yaml DEST

Reads the rendered ConfigMaps and the Deployment's projected `rules` volume and writes DEST as
the kubelet's atomic writer would: the files in a timestamped `..<stamp>` folder, a `..data`
symlink to it, and each top-level entry a symlink through `..data`. When DEST already holds such a
layout, writes a new timestamped folder, renames a new `..data` over the old one and removes the
old folder, as the kubelet does when a ConfigMap changes in place. `cpc-rules test --rules DEST` then shows that the layout is a
working rules folder. Needs PyYAML (checkov brings it).
"""

import os
import pathlib
import sys
import time

import yaml


def main():
    rendered, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules")
    stamp = dest / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    for source in volume["projected"]["sources"]:
        data = maps[source["configMap"]["name"]]
        for item in source["configMap"]["items"]:
            target = stamp / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
    tmp = dest / "..data_tmp"
    os.symlink(stamp.name, tmp)
    old = os.readlink(dest / "..data") if (dest / "..data").is_symlink() else None
    os.replace(tmp, dest / "..data")
    for top in sorted(p.name for p in stamp.iterdir()):
        link = dest / top
        if not link.is_symlink():
            os.symlink(f"..data/{top}", link)
    if old:
        import shutil
        shutil.rmtree(dest / old)
    print(f"laid out {sum(1 for p in stamp.rglob('*') if p.is_file())} files under {dest} ({stamp.name})")


if __name__ == "__main__":
    main()
