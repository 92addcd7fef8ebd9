#!/usr/bin/env python3
"""Helpers for scripts/bench (stdlib only).

  bench.py stage --dest DIR --quota BYTES [--fat] [--exclude PATH]... SRC:SUBDIR...
      Copy real files from SRC trees into DIR/SUBDIR until BYTES of file data are copied; prints the bytes.
  bench.py measure --work DIR --disk DISK --layout LAYOUT.json --rescue BIN [--runs N] [--command CMD]
      Time every tool, check the restored filesystems, print the table (also DIR/results.md, .json).
  bench.py floor --image IMG --target TARGET --bytes N
      The verified restore's disk traffic with no work in between: reads IMG while writing N bytes to TARGET,
      fsyncs, reads them back (all O_DIRECT, 8 MiB writes, 16 MiB reads).

Every timed command runs under `/usr/bin/time -v` (one per process of a pipeline) for its peak RSS and CPU
time; wall time is measured around the whole pipeline plus an fsync of what it wrote. The page cache is
dropped before every timed run.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

MiB = 1 << 20
GOAL_SPEEDUP = 4.0
GOAL_RSS_MIB = 256


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Broke(Exception):
    """Something failed that should not: the benchmark exits non-zero."""


# --------------------------------------------------------------------------------------------- staging

FAT_BAD = re.compile(r'[\x00-\x1f"*/:<>?\\|]')


def cmd_stage(a):
    copied = 0
    fat_seen = {}  # directory -> lower-case names already there (FAT names are case-insensitive)
    excluded = [os.path.realpath(e) for e in a.exclude]

    def fat_ok(dst_dir, name):
        if FAT_BAD.search(name) or name.endswith((".", " ")) or len(name) > 200:
            return False
        seen = fat_seen.setdefault(dst_dir, set())
        if name.lower() in seen:
            return False
        seen.add(name.lower())
        return True

    for spec in a.sources:
        src, _, sub = spec.partition(":")
        if not os.path.isdir(src):
            continue
        base = os.path.join(a.dest, sub) if sub else a.dest
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            filenames.sort()
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in excluded]
            rel = os.path.relpath(dirpath, src)
            dst_dir = os.path.normpath(os.path.join(base, rel))
            if a.fat and rel != "." and (len(dst_dir) - len(a.dest) > 180
                                         or not fat_ok(os.path.dirname(dst_dir), os.path.basename(dst_dir))):
                dirnames[:] = []
                continue
            try:
                os.makedirs(dst_dir, exist_ok=True)
            except OSError:
                dirnames[:] = []
                continue
            for name in filenames:
                if copied >= a.quota:
                    print(copied)
                    return 0
                s = os.path.join(dirpath, name)
                d = os.path.join(dst_dir, name)
                try:
                    st = os.lstat(s)
                    if os.path.islink(s):
                        if a.fat:
                            continue
                        os.symlink(os.readlink(s), d)
                        continue
                    if not os.path.isfile(s) or (a.fat and not fat_ok(dst_dir, name)):
                        continue
                    shutil.copyfile(s, d, follow_symlinks=False)
                    try:
                        os.chmod(d, st.st_mode & 0o7777)
                        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
                    except OSError:
                        pass
                    copied += st.st_size
                except OSError:
                    continue
    print(copied)
    return 0


# ------------------------------------------------------------------------------------------ measuring

def sh(argv, check=True, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if check and r.returncode != 0:
        raise Broke(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}")
    return r


def cpu_busy_seconds():
    """CPU seconds the whole machine has spent busy (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait):
    """Wait (up to max_wait s) until other processes leave the CPUs mostly idle; returns the busy share seen."""
    ncpu = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(1.0)
        share = (cpu_busy_seconds() - b0) / ncpu
        if share < 0.15 or time.monotonic() > deadline:
            if said:
                log(f"  ... going on (other processes now use {share:.0%} of the CPUs)")
            return share
        if not said:
            log(f"waiting for the machine to be quiet: other processes use {share:.0%} of the CPUs")
            said = True


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_time_v(path):
    """Peak RSS (KiB) and CPU seconds from a `/usr/bin/time -v -o` file."""
    rss, cpu, status = 0, 0.0, 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("Maximum resident set size"):
                rss = int(line.rsplit(":", 1)[1])
            elif line.startswith(("User time", "System time")):
                cpu += float(line.rsplit(":", 1)[1])
            elif line.startswith("Command exited with non-zero status"):
                status = int(line.rsplit(" ", 1)[1])
            elif line.startswith("Command terminated by signal"):
                status = 128 + int(line.rsplit(" ", 1)[1])
    return rss, cpu, status


class Pipeline:
    """Runs `a | b | c > out`, each process under /usr/bin/time -v; fsyncs `sync` paths inside the timing."""

    def __init__(self, work, name):
        self.work = work
        self.name = name

    def run(self, stages, stdin=None, stdout=None, sync=(), progress=False, out_file=None):
        stats = [os.path.join(self.work, f"{self.name}.{i}.time") for i in range(len(stages))]
        errlog = open(os.path.join(self.work, f"{self.name}.stderr"), "w")
        events = []
        procs = []
        fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
        fout = open(stdout, "wb") if stdout else (open(out_file, "wb") if out_file else None)
        busy0 = cpu_busy_seconds()
        t0 = time.monotonic()
        prev = fin
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            p = subprocess.Popen(
                ["/usr/bin/time", "-v", "-o", stats[i]] + argv,
                stdin=prev,
                stdout=(fout if fout else subprocess.DEVNULL) if last else subprocess.PIPE,
                stderr=subprocess.PIPE if (progress and i == 0) else errlog,
            )
            if i > 0 and prev is not None:
                prev.close()  # the next process holds it now
            prev = p.stdout
            procs.append(p)
        reader = None
        if progress:
            def read_progress(pipe):
                for raw in pipe:
                    now = time.monotonic() - t0
                    line = raw.decode(errors="replace").strip()
                    try:
                        events.append((now, json.loads(line)))
                    except ValueError:
                        errlog.write(line + "\n")
            reader = threading.Thread(target=read_progress, args=(procs[0].stderr,))
            reader.start()
        codes = [p.wait() for p in procs]
        if reader:
            reader.join()
        for p in sync:
            fsync_path(p)
        wall = time.monotonic() - t0
        busy = cpu_busy_seconds() - busy0
        if fout:
            fout.close()
        if stdin:
            fin.close()
        errlog.close()
        per = [parse_time_v(s) for s in stats]
        if any(codes) or any(s[2] for s in per):
            with open(os.path.join(self.work, f"{self.name}.stderr")) as f:
                tail = f.read()[-3000:]
            raise Broke(f"{self.name}: {' | '.join(' '.join(s) for s in stages)} exited {codes}:\n{tail}")
        cpu = sum(s[1] for s in per)
        return {
            "seconds": wall,
            "rss_kib": sum(s[0] for s in per),  # the processes of a pipeline run at the same time
            "cpu": cpu,
            # CPU time others (and the kernel's writeback threads) used meanwhile: shows interference.
            "others": max(0.0, busy - cpu),
            "events": events,
        }


class Loops:
    """Loop devices over byte ranges of files (no udev here: no partition nodes, so one per partition)."""

    def __init__(self):
        self.devs = []

    def attach(self, path, start, size, ro=True):
        argv = ["losetup", "-f", "--show", "-o", str(start), "--sizelimit", str(size)]
        if ro:
            argv.append("-r")
        dev = sh(argv + [path]).stdout.strip()
        self.devs.append(dev)
        return dev

    def detach_all(self):
        for d in reversed(self.devs):
            subprocess.run(["losetup", "-d", d], stderr=subprocess.DEVNULL)
        self.devs = []


def new_target(path, size):
    if os.path.exists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.truncate(size)


def fsck_part(loops, disk, p):
    """OK/FAIL (with the tool's output) for one partition of `disk`."""
    if p["fs"] == "none":
        return None
    dev = loops.attach(disk, p["start"], p["size"], ro=True)
    try:
        argv = {"ext4": ["e2fsck", "-fn", dev], "fat32": ["fsck.vfat", "-n", dev], "ntfs": ["ntfsfix", "-n", dev]}[p["fs"]]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ok = r.returncode == 0
        return (argv[0], ok, r.stdout.strip().splitlines()[-3:])
    finally:
        subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
        loops.devs.remove(dev)


def sha_range(path, start, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = size
        while left:
            b = f.read(min(left, 8 * MiB))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def phases(events, total):
    """Our timeline from the `--json` progress events: each phase, and each stream of a phase, in order."""
    if not events:
        return ["(no progress events)"]
    segs = []  # [start, end, phase, stream, bytes]
    for t, e in events:
        key = (e["phase"], e.get("current") or "")
        if not segs or (segs[-1][2], segs[-1][3]) != key:
            if segs and segs[-1][2] == key[0]:
                segs[-1][1] = t  # the next stream of the same phase starts where this one ends
            segs.append([t, t, key[0], key[1], e.get("current_total") or e.get("bytes_total") or 0])
        segs[-1][1] = t
    out = [f"{events[0][0]:.1f} s before the first progress event (start, detection, used-block maps)"]
    prev_phase, prev_end = None, None
    for st, en, ph, cur, n in segs:
        if prev_phase and ph != prev_phase:
            out.append(f"{st - prev_end:.1f} s between {prev_phase} and {ph}")
        d = en - st
        if d >= 0.2:
            rate = f", {n / d / MiB:,.0f} MiB/s" if n and d > 0 else ""
            out.append(f"{d:.1f} s {ph}{(' ' + cur) if cur else ''}{rate}")
        prev_phase, prev_end = ph, en
    out.append(f"{total - events[-1][0]:.1f} s after the last progress event (finishing, fsync, exit)")
    return out


PARTCLONE = {"ext4": "partclone.extfs", "ntfs": "partclone.ntfs", "fat32": "partclone.fat", "none": "partclone.dd"}


def partclone_capture_argv(p, src, logfile):
    if p["fs"] == "none":  # Clonezilla's choice for what partclone cannot parse; it takes no -c
        return [PARTCLONE[p["fs"]], "-z", "16777216", "-L", logfile, "-s", src, "-o", "-"]
    return [PARTCLONE[p["fs"]], "-a1", "-z", "10485760", "-L", logfile, "-c", "-s", src, "-o", "-"]


def partclone_restore_argv(p, dev, logfile):
    if p["fs"] == "none":
        return [PARTCLONE[p["fs"]], "-z", "16777216", "-L", logfile, "-s", "-", "-o", dev]
    return [PARTCLONE[p["fs"]], "-z", "10485760", "-L", logfile, "-r", "-s", "-", "-o", dev]


def combine(results):
    """One operation over several pipelines (partclone's partitions): times add up, RSS is the largest."""
    return {
        "seconds": sum(r["seconds"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "others": sum(r["others"] for r in results),
        "rss_kib": max(r["rss_kib"] for r in results),
        "events": [],
        "parts": [r["seconds"] for r in results],
    }


def cmd_floor(a):
    import mmap
    block = 8 * MiB

    def read_all(path, size, limit=None):
        """Reads `path` from the start in `size` requests, to its end or past `limit` bytes."""
        buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            off = 0
            while True:
                n = os.preadv(fd, [buf], off)
                if n <= 0:
                    return off
                off += n
                if limit is not None and off >= limit:
                    return off
        finally:
            os.close(fd)

    reader = threading.Thread(target=read_all, args=(a.image, block))
    reader.start()
    data = mmap.mmap(-1, block)
    data.write(os.urandom(block))
    fd = os.open(a.target, os.O_WRONLY | os.O_DIRECT)
    try:
        off = 0
        while off < a.bytes:
            n = min(block, a.bytes - off + 4095 & ~4095)
            off += os.pwritev(fd, [memoryview(data)[:n]], off)
        os.fsync(fd)
    finally:
        os.close(fd)
    reader.join()
    read_all(a.target, 16 * MiB, a.bytes)
    return 0


def cmd_measure(a):
    W = a.work
    R = os.path.join(W, "run")
    shutil.rmtree(R, ignore_errors=True)
    os.makedirs(R)
    with open(a.layout) as f:
        layout = json.load(f)
    disk = a.disk
    size = os.path.getsize(disk)
    parts = layout["partitions"]
    nproc = os.cpu_count() or 1
    loops = Loops()
    checks = []
    per_round = {}  # key -> [result of each round]
    extra = {}

    def run(name, stages, prepare=None, **kw):
        """One timed pipeline on a cold page cache; again (up to twice) when another program disturbed it."""
        for attempt in range(1, 4):
            if prepare:
                prepare()
            drop_caches()
            wait_quiet(a.quiet_wait)
            r = Pipeline(R, name).run(stages, **kw)
            if r["others"] <= 0.2 * r["seconds"] * nproc or attempt == 3:
                return r
            log(f"  other processes used {r['others']:.1f} CPU s during that run; running it again")

    def rm(path):
        if os.path.exists(path):
            os.remove(path)

    img = os.path.join(R, "disk.rimg")
    tgt = os.path.join(R, "target.img")
    pc_files = {p["number"]: os.path.join(R, f"p{p['number']}.{p['fs']}-ptcl-img.zst") for p in parts}
    pc_tgt = os.path.join(R, "pc-target.img")
    dd_img = os.path.join(R, "disk.img.zst")
    dd_tgt = os.path.join(R, "dd-target.img")
    table = sh(["sfdisk", "-d", disk]).stdout
    pc_cmds = []
    try:
        # Sanity: the corpus itself checks out, or the restore checks would mean nothing.
        for p in parts:
            c = fsck_part(loops, disk, p)
            if c:
                checks.append((f"source partition {p['number']} ({p['fs']})", c[0], c[1], c[2], True))

        # Rounds interleave the tools, so a slow spell of this (shared, virtual) machine hits all of them.
        for rnd in range(a.runs):
            first = rnd == 0
            tag = f"round {rnd + 1}/{a.runs}: " if a.runs > 1 else ""

            log(f"{tag}rescue capture ({nproc} threads, the defaults: level 2, block dedup)")
            summary = os.path.join(R, "ours-capture.json")
            r = run("ours-capture", [[a.rescue, "capture", disk, "-o", img, "--threads", str(nproc),
                                      "--json"]], prepare=lambda: rm(img), sync=[img], progress=True,
                    out_file=summary)
            r["image_bytes"] = os.path.getsize(img)
            with open(summary) as f:
                extra["capture_summary"] = json.load(f)
            per_round.setdefault("ours-capture", []).append(r)

            # For comparison: the level partclone's pipeline uses, without block deduplication (format 1.0).
            log(f"{tag}rescue capture --level 3 --no-dedup")
            l3_img = img + ".l3"
            r = run("ours-capture-l3", [[a.rescue, "capture", disk, "-o", l3_img, "--level", "3", "--no-dedup",
                                         "--threads", str(nproc)]], prepare=lambda: rm(l3_img), sync=[l3_img])
            r["image_bytes"] = os.path.getsize(l3_img)
            rm(l3_img)
            per_round.setdefault("ours-capture-l3", []).append(r)

            log(f"{tag}rescue verify (the image alone)")
            per_round.setdefault("ours-verify", []).append(run("ours-verify", [[a.rescue, "verify", img]]))

            for key, label, flags in (("ours-restore", "restore (with read-back verify)", []),
                                      ("ours-restore-np", "restore --no-precheck", ["--no-precheck"]),
                                      ("ours-restore-nv", "restore --no-verify", ["--no-verify"])):
                log(f"{tag}rescue {label}")
                r = run(key, [[a.rescue, "restore", img, tgt, "--yes", "--json", "--threads", str(nproc)] + flags],
                        prepare=lambda: new_target(tgt, size), sync=[tgt], progress=True)
                per_round.setdefault(key, []).append(r)
                if first:
                    check_ours(a, loops, checks, disk, tgt, img, parts, label)
                written = os.stat(tgt).st_blocks * 512  # the data restored: runs of zeros are holes
                rm(tgt)

            # The disk's own time for the verified restore's I/O, to tell the code's share from the disk's.
            log(f"{tag}disk floor: the verified restore's I/O alone ({written / MiB:,.0f} MiB written)")
            fl_tgt = tgt + ".floor"
            per_round.setdefault("disk-floor", []).append(run(
                "disk-floor", [[sys.executable, os.path.abspath(__file__), "floor", "--image", img,
                                "--target", fl_tgt, "--bytes", str(written)]],
                prepare=lambda: new_target(fl_tgt, size), sync=[fl_tgt]))
            rm(fl_tgt)

            # Clonezilla: partclone.<fs> | zstd per partition, from loop devices (nothing is extracted).
            log(f"{tag}partclone capture, {len(parts)} partitions")
            src_loops = {p["number"]: loops.attach(disk, p["start"], p["size"], ro=True) for p in parts}
            res = []
            for p in parts:
                n = p["number"]
                stages = [partclone_capture_argv(p, src_loops[n], os.path.join(R, f"pc{n}.log")),
                          ["zstd", "-T0", "-3", "-q", "-c"]]
                if first:
                    pc_cmds.append(" | ".join(" ".join(s) for s in stages))
                res.append(run(f"pc-capture-p{n}", stages, prepare=lambda f=pc_files[n]: rm(f),
                               stdout=pc_files[n], sync=[pc_files[n]]))
            for dev in src_loops.values():
                subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
                loops.devs.remove(dev)
            r = combine(res)
            r["image_bytes"] = sum(os.path.getsize(f) for f in pc_files.values())
            extra["pc_part_bytes"] = [os.path.getsize(pc_files[p["number"]]) for p in parts]
            per_round.setdefault("pc-capture", []).append(r)

            # ... and its restore, onto a target that gets the partition table first (untimed, as ocs-sr).
            log(f"{tag}partclone restore, {len(parts)} partitions")
            new_target(pc_tgt, size)
            subprocess.run(["sfdisk", "-q", pc_tgt], input=table, text=True, check=True)
            res = []
            for p in parts:
                n = p["number"]
                dev = loops.attach(pc_tgt, p["start"], p["size"], ro=False)
                res.append(run(f"pc-restore-p{n}", [["zstd", "-dc", "-q", pc_files[n]],
                                                    partclone_restore_argv(p, dev, os.path.join(R, f"pcr{n}.log"))],
                               sync=[dev]))
                subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
                loops.devs.remove(dev)
            per_round.setdefault("pc-restore", []).append(combine(res))
            if first:
                check_partclone(loops, checks, disk, pc_tgt, parts)
            rm(pc_tgt)
            for f in pc_files.values():
                rm(f)

            log(f"{tag}dd | zstd capture")
            r = run("dd-capture", [["dd", f"if={disk}", "bs=4M", "status=none"], ["zstd", "-T0", "-3", "-q", "-c"]],
                    prepare=lambda: rm(dd_img), stdout=dd_img, sync=[dd_img])
            r["image_bytes"] = os.path.getsize(dd_img)
            per_round.setdefault("dd-capture", []).append(r)
            log(f"{tag}zstd | dd restore")
            per_round.setdefault("dd-restore", []).append(run(
                "dd-restore", [["zstd", "-dc", "-q", dd_img],
                               ["dd", f"of={dd_tgt}", "bs=4M", "iflag=fullblock", "conv=notrunc", "status=none"]],
                prepare=lambda: new_target(dd_tgt, size), sync=[dd_tgt]))
            rm(dd_tgt)
            rm(dd_img)
    finally:
        loops.detach_all()

    labels = [
        ("ours-capture", "rescue", f"capture (defaults: level 2, block dedup; {nproc} threads)"),
        ("ours-capture-l3", "rescue", f"capture --level 3 --no-dedup (for comparison; {nproc} threads)"),
        ("ours-verify", "rescue", "verify the image (info: no writes)"),
        ("ours-restore", "rescue", "restore (with read-back verify)"),
        ("ours-restore-np", "rescue", "restore --no-precheck (read-back verify, no check before writing)"),
        ("ours-restore-nv", "rescue", "restore --no-verify"),
        ("disk-floor", "disk alone", "the verified restore's I/O: image read while the data is written, "
                                     "fsync, data read back (O_DIRECT)"),
        ("pc-capture", "partclone+zstd", f"capture ({len(parts)} partitions)"),
        ("pc-restore", "partclone+zstd", f"restore ({len(parts)} partitions)"),
        ("dd-capture", "dd+zstd", "capture (whole disk)"),
        ("dd-restore", "dd+zstd", "restore (whole disk)"),
    ]
    rows = []
    for key, tool, label in labels:
        rs = per_round[key]
        mid = sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]
        agg = {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "all_seconds": [r["seconds"] for r in rs],
            "cpu": statistics.median(r["cpu"] for r in rs),
            "others": max(r["others"] for r in rs),
            "rss_kib": max(r["rss_kib"] for r in rs),
            "events": mid["events"],
            "parts": mid.get("parts"),
        }
        rows.append((key, tool, label, agg, rs[-1].get("image_bytes")))

    report = render(a, layout, rows, checks, extra, pc_cmds, nproc)
    print(report)
    with open(os.path.join(W, "results.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(W, "results.json"), "w") as f:
        json.dump({"rows": [{"key": k, "tool": t, "operation": o, "seconds": r["seconds"],
                             "all_seconds": r["all_seconds"], "cpu_seconds": r["cpu"], "image_bytes": b,
                             "peak_rss_kib": r["rss_kib"], "others_cpu_seconds": r["others"]}
                            for k, t, o, r, b in rows],
                   "checks": [{"what": w, "how": h, "ok": ok, "ours": o} for w, h, ok, _, o in checks],
                   "layout": layout}, f, indent=1)
    if not all(c[2] for c in checks if c[4]):
        log("some correctness checks of the corpus or of our restore FAILED (see above)")
        return 1
    return 0


def check_ours(a, loops, checks, disk, tgt, img, parts, label):
    for p in parts:
        c = fsck_part(loops, tgt, p)
        if c:
            checks.append((f"rescue {label}: partition {p['number']} ({p['fs']})", c[0], c[1], c[2], True))
        else:
            same = sha_range(disk, p["start"], p["size"]) == sha_range(tgt, p["start"], p["size"])
            checks.append((f"rescue {label}: partition {p['number']} (no fs)", "sha256 vs source", same, [], True))
    r = subprocess.run([a.rescue, "verify", img, "--against", tgt], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    checks.append((f"rescue {label}: every captured byte", "rescue verify --against", r.returncode == 0,
                   r.stdout.strip().splitlines()[-2:], True))
    gpt_src = sh(["sfdisk", "-d", disk]).stdout.replace(disk, "D")
    gpt_tgt = sh(["sfdisk", "-d", tgt]).stdout.replace(tgt, "D")
    checks.append((f"rescue {label}: partition table", "sfdisk -d", gpt_src == gpt_tgt, [], True))


def check_partclone(loops, checks, disk, pc_tgt, parts):
    for p in parts:
        c = fsck_part(loops, pc_tgt, p)
        if c:
            tail = c[2]
            if not c[1] and p["fs"] == "ntfs" and any("alternate boot sector" in t for t in tail):
                # The NTFS backup boot sector is the partition's last sector, outside every cluster, so
                # partclone.ntfs never copies it; a target that held the same volume before hides this.
                tail = ["the backup boot sector (last sector of the partition) was not restored: "
                        "partclone.ntfs does not copy it"]
            checks.append((f"partclone restore: partition {p['number']} ({p['fs']})", c[0], c[1], tail, False))
        else:
            same = sha_range(disk, p["start"], p["size"]) == sha_range(pc_tgt, p["start"], p["size"])
            checks.append((f"partclone restore: partition {p['number']} (no fs)", "sha256 vs source", same, [],
                           False))


def fmt_bytes(b):
    return "" if b is None else f"{b:,} ({b / MiB:,.0f} MiB)"


def render(a, layout, rows, checks, extra, pc_cmds, nproc):
    by = {k: (r, b) for k, _, _, r, b in rows}
    L = []
    now = datetime.datetime.now().astimezone()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    L.append(f"Run {now:%Y-%m-%d %H:%M %Z}: {nproc} cores ({cpu}), "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB, "
             f"kernel {platform.release()}, directly on the host (no QEMU/TCG).")
    L.append(f"Command: `{a.command}`" + (f" (medians of {a.runs} rounds; a round runs every tool once)"
                                          if a.runs > 1 else " (one run each)"))
    L.append("")
    disk_b = layout["disk_bytes"]
    files = sum(p["file_bytes"] for p in layout["partitions"])
    summ = extra.get("capture_summary", {})
    used = summ.get("used_bytes", 0)
    L.append(f"Corpus: a {disk_b / (1 << 30):.0f} GiB GPT disk image holding {files / MiB:,.0f} MiB of data in "
             f"files; most of each filesystem's free space holds stale pseudo-random data (a junk file written, "
             f"then deleted). `rescue` reads {used / MiB:,.0f} MiB (used blocks, tables, the partition without a "
             f"filesystem), of which {summ.get('zero_bytes', 0) / MiB:,.0f} MiB are zeros.")
    L.append("")
    L.append("| # | filesystem | size MiB | file data MiB | content |")
    L.append("| --- | --- | ---: | ---: | --- |")
    for p in layout["partitions"]:
        L.append(f"| {p['number']} | {p['fs']} | {p['size'] / MiB:,.0f} | {p['file_bytes'] / MiB:,.0f} | {p['what']} |")
    L.append("")
    L.append("| tool | operation | seconds | CPU s | image bytes | peak RSS MiB | others' CPU s |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for _, t, o, r, b in rows:
        L.append(f"| {t} | {o} | {r['seconds']:.1f} | {r['cpu']:.1f} | {fmt_bytes(b)} | {r['rss_kib'] / 1024:.0f} "
                 f"| {r['others']:.1f} |")
    L.append("")

    def ratio(x, y):
        return x / y if y else float("inf")

    oc, oimg = by["ours-capture"]
    o3, o3img = by["ours-capture-l3"]
    orv, _ = by["ours-restore"]
    orn, _ = by["ours-restore-nv"]
    pc, pimg = by["pc-capture"]
    pr, _ = by["pc-restore"]
    dc, dimg = by["dd-capture"]
    dr, _ = by["dd-restore"]

    def goal(ok):
        return "met" if ok else "**missed**"

    L.append("| ratio | value | goal | |")
    L.append("| --- | ---: | --- | --- |")
    x = ratio(pc["seconds"], oc["seconds"])
    L.append(f"| capture: partclone+zstd time / ours | {x:.2f} | >= {GOAL_SPEEDUP:.0f} | {goal(x >= GOAL_SPEEDUP)} |")
    L.append(f"| capture: dd+zstd time / ours | {ratio(dc['seconds'], oc['seconds']):.2f} | | |")
    L.append(f"| capture --level 3 --no-dedup: partclone+zstd time / it; its size / partclone+zstd's | "
             f"{ratio(pc['seconds'], o3['seconds']):.2f}; {ratio(o3img, pimg):.3f} | | for comparison |")
    x = ratio(pr["seconds"], orv["seconds"])
    L.append(f"| restore, verified: partclone+zstd time / ours | {x:.2f} | >= {GOAL_SPEEDUP:.0f} | {goal(x >= GOAL_SPEEDUP)} |")
    fl, _ = by["disk-floor"]
    L.append(f"| restore, verified: our time / the disk's for the same I/O | {ratio(orv['seconds'], fl['seconds']):.2f} "
             f"| | 4x partclone+zstd needs {pr['seconds'] / GOAL_SPEEDUP:.2f} s; the disk alone took "
             f"{fl['seconds']:.2f} s |")
    x = ratio(pr["seconds"], orn["seconds"])
    L.append(f"| restore, --no-verify: partclone+zstd time / ours | {x:.2f} | >= {GOAL_SPEEDUP:.0f} | "
             f"{goal(x >= GOAL_SPEEDUP)} |")
    onp, _ = by["ours-restore-np"]
    L.append(f"| restore: the check of every chunk before the first write costs | "
             f"{orv['seconds'] - onp['seconds']:.1f} s ({ratio(orv['seconds'] - onp['seconds'], onp['seconds']) * 100:.0f}%) "
             f"| | restore {orv['seconds']:.1f} s, --no-precheck {onp['seconds']:.1f} s |")
    L.append(f"| restore, verified: dd+zstd time / ours | {ratio(dr['seconds'], orv['seconds']):.2f} | | |")
    L.append(f"| restore, --no-verify: dd+zstd time / ours | {ratio(dr['seconds'], orn['seconds']):.2f} | | |")
    x = ratio(oimg, pimg)
    L.append(f"| image: our size / partclone+zstd size | {x:.3f} | <= 1 | {goal(x <= 1.0)} |")
    L.append(f"| image: our size / dd+zstd size | {ratio(oimg, dimg):.3f} | | |")
    tail = layout.get("unallocated_tail_bytes", 0)
    if tail:
        read = extra.get("capture_summary", {}).get("used_bytes", 0)
        L.append(f"| unallocated stale tail ({tail / MiB:,.0f} MiB outside every partition): bytes our capture read / "
                 f"the disk's | {ratio(read, layout['disk_bytes']):.3f} | | not read (dd+zstd reads and stores it; "
                 f"partclone reads partitions only) |")
    peak = max(oc["rss_kib"], orv["rss_kib"], orn["rss_kib"]) / 1024
    L.append(f"| our peak RSS: capture, restore | {oc['rss_kib'] / 1024:.0f}, "
             f"{max(orv['rss_kib'], orn['rss_kib']) / 1024:.0f} MiB | <= {GOAL_RSS_MIB} MiB | {goal(peak <= GOAL_RSS_MIB)} |")
    L.append("")
    if a.runs > 1:
        L.append("Seconds in each round: " + "; ".join(
            f"{t} {o.split(' (')[0]}: " + ", ".join(f"{v:.1f}" for v in r["all_seconds"]) for _, t, o, r, _ in rows)
            + ".")
        L.append("")
        # Paired by round: the tools of one round ran within minutes of each other, so a slow spell of the
        # host that spans a round hits both sides of its ratio.
        def per_round(theirs, ours):
            return ", ".join(f"{ratio(t, o):.2f}" for t, o in zip(theirs["all_seconds"], ours["all_seconds"]))
        L.append("partclone+zstd time / ours within each round: capture " + per_round(pc, oc)
                 + "; verified restore " + per_round(pr, orv) + "; restore --no-verify " + per_round(pr, orn)
                 + ". Verified restore / the disk alone: " + ", ".join(
                     f"{ratio(o, f):.2f}" for o, f in zip(orv["all_seconds"], fl["all_seconds"])) + ".")
        L.append("")
    fss = [f"{p['number']} ({p['fs']})" for p in layout["partitions"]]
    L.append("partclone per partition (median round): capture " + ", ".join(
        f"{n} {sec:.1f} s" for n, sec in zip(fss, pc["parts"] or [])) + "; image " + ", ".join(
        f"{n} {b / MiB:,.0f} MiB" for n, b in zip(fss, extra.get("pc_part_bytes", []))) + "; restore " + ", ".join(
        f"{n} {sec:.1f} s" for n, sec in zip(fss, pr["parts"] or [])) + ".")
    L.append("")
    busy = [(t, o, r["others"]) for _, t, o, r, _ in rows if r["others"] > 1.0]
    if busy:
        L.append("CPU time outside the measured processes: "
                 + "; ".join(f"{t} {o} ({x:.1f} CPU s)" for t, o, x in busy)
                 + ". Kernel threads working for the run count here (writeback, the loop devices partclone "
                   "reads and writes through); another program running at the same time would show as much more.")
        L.append("")
    L.append("Correctness checks:")
    L.append("")
    for what, how, ok, tail, ours in checks:
        L.append(f"- {'OK' if ok else 'FAIL'} {what} ({how})" + ("" if ok else ": " + " / ".join(tail))
                 + ("" if ok or ours else " (the other tool's result; does not fail the benchmark)"))
    L.append("")
    L.append("Where our time goes (`--json` progress events, median run):")
    L.append("")
    for label, key in (("capture", "ours-capture"), ("restore, verified", "ours-restore"),
                       ("restore, --no-verify", "ours-restore-nv")):
        r = by[key][0]
        L.append(f"- {label}, {r['seconds']:.1f} s: " + "; ".join(phases(r["events"], r["seconds"])))
    L.append("")
    L.append("How it was measured: the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before "
             "every timed run, so each tool reads its input from the (virtual) disk, not from memory; every time "
             "includes an fsync of what the command wrote (image or target). Peak RSS is `/usr/bin/time -v`'s "
             "\"Maximum resident set size\"; for a pipeline, the sum over its processes (they run at the same "
             "time); for partclone, its largest partition's pipeline. Restores write to a fresh sparse file of the "
             "disk's size. partclone reads and writes loop devices (`losetup -o OFFSET --sizelimit SIZE`), so no "
             "partition is extracted (buffered loop devices: `--direct-io=on` made partclone no faster); its restore "
             "target gets the partition table from `sfdisk` first (untimed, milliseconds), as Clonezilla does. "
             "Before each run the script waits for the machine to be idle, and a run during which other processes "
             "used more than a fifth of the CPUs is repeated (\"others' CPU s\" also counts the kernel's "
             "writeback of the written files). Rounds interleave the tools so that this virtual machine's "
             "slow spells (the same capture took 8 to 14 CPU seconds on different runs) hit every tool alike. "
             "Commands:")
    L.append("")
    L.append(f"- rescue: `rescue capture DISK -o IMG --threads {nproc}` (and `--level 3 --no-dedup`); "
             f"`rescue restore IMG TARGET --yes [--no-verify]`")
    L.append("- partclone, with Clonezilla's options (`-a1`: this build has no `-a3`), partclone.dd for the "
             "partition without a filesystem; restore `zstd -dc P.zst | partclone.<fs> -z 10485760 -r -s - -o LOOP`:")
    for c in pc_cmds:
        L.append(f"  - `{re.sub(r' -L [^ ]+', '', c)} > P.zst`")
    L.append("- dd: `dd if=DISK bs=4M | zstd -T0 -3 > disk.zst`; `zstd -dc disk.zst | dd of=TARGET bs=4M "
             "iflag=fullblock conv=notrunc`")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--dest", required=True)
    s.add_argument("--quota", type=int, required=True)
    s.add_argument("--fat", action="store_true")
    s.add_argument("--exclude", action="append", default=[])
    s.add_argument("sources", nargs="+")
    m = sub.add_parser("measure")
    m.add_argument("--work", required=True)
    m.add_argument("--disk", required=True)
    m.add_argument("--layout", required=True)
    m.add_argument("--rescue", required=True)
    m.add_argument("--runs", type=int, default=1)
    m.add_argument("--command", default="scripts/bench")
    m.add_argument("--quiet-wait", type=float, default=300,
                   help="wait up to this many seconds before each run for other processes to go idle")
    fl = sub.add_parser("floor")
    fl.add_argument("--image", required=True)
    fl.add_argument("--target", required=True)
    fl.add_argument("--bytes", type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "floor":
        return cmd_floor(a)
    if a.cmd == "stage":
        if a.quota <= 0:
            print(0)
            return 0
        return cmd_stage(a)
    try:
        return cmd_measure(a)
    except Broke as e:
        log(f"FAILED: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
