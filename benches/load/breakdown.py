#!/usr/bin/env python3
"""Where switchyard's user-space instructions go, grouped by layer (issue 25).

Runs switchyard alone under callgrind with the load benchmark's config and load (the same
measurement as `instructions.py`: pinned, a warm-up, counters zeroed, a fixed load, a dump),
then sums the self (exclusive) cost of every function into the layers of the table below
and prints instructions per request and share per layer, for HTTP/1.1 and h2c.

Code that the compiler inlined is charged to the source file it came from, not to the
function it was inlined into: callgrind records that file (its `fi=`/`fe=` lines), so a
hyper parser inlined into a switchyard future still counts as hyper's codec. The rules match
on that file path and on the demangled function name.

The allocator, memcpy and the http types are called by every other layer, so each is also
split by the layer that calls into it (from callgrind's call edges, in proportion to each
call's inclusive cost).

    python3 benches/load/breakdown.py --switchyard target/release/switchyard
    python3 benches/load/breakdown.py --switchyard BIN --check --haproxy  # + instructions.py
    python3 benches/load/breakdown.py --switchyard BIN --keep DIR        # save the dumps
    python3 benches/load/breakdown.py --from-dumps DIR --detail routing  # re-group them
    python3 benches/load/breakdown.py --switchyard BIN --tests close --haproxy  # new conn per request

`--check` measures the same binary with instructions.py right after: the two totals should
agree within repeat noise (about 1.5 %). When a layer looks wrong, `--detail LAYER` lists its
largest functions with their source files, and `other` always lists its top ones.

Needs valgrind, wrk, h2load and nginx (`benches/load/run.sh --instructions` installs them).
The binary needs debuginfo for the file rules (the release profile keeps line tables).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

import instructions
import run
import scenarios

# (layer, what to match, regex), tried in order: the first match wins. "fn" matches the
# demangled function name, "file" the source path of the code (after inlining). The order is
# the decision: the allocator, memcpy, syscalls and clock reads first (wherever they are
# called from); then hyper's client dispatch (its `dispatch::Client` lives in the same file as
# the h1 codec); then third-party code by its crate's path, so a hyper parser inlined into a
# switchyard future counts as hyper's; then switchyard's own modules by function name (their
# inlined helpers included), and last by name alone for std code (`/rustc/...` paths).
# `SY` is a path in switchyard's own tree (neither the cargo registry, std nor glibc).
SY = r"^(?!.*(\.cargo/registry|/rustc/))(?!\./).*/src/"
RULES = [
    ("allocator", "fn", r"^(mi_|_mi_|malloc$|free$|realloc$|calloc$|__libc_(malloc|free|"
     r"realloc)|_int_(malloc|free)|__rust_(alloc|dealloc|realloc)|__rdl_|__rg_)"),
    ("allocator", "file", r"mimalloc|/malloc/"),
    ("memcpy", "fn", r"^_*(mem(cpy|move|set|cmp|chr)|bcmp)"),
    ("clock reads", "fn", r"Timespec>::(now|sub_timespec)|Instant::now|clock_gettime"),
    ("syscall wrappers", "fn", r"^(__GI_)?_*(libc_)?(read|write|writev|readv|recv|send|"
     r"recvfrom|sendto|recvmsg|sendmsg|epoll_wait|epoll_ctl|accept4?|close|syscall|futex|"
     r"lll_|pthread_|getsockopt|setsockopt|shutdown|connect)"),
    ("syscall wrappers", "file", r"sysdeps/unix/sysv/linux|/nptl/"),
    ("upstream client dispatch", "fn", r"hyper::proto::h1::dispatch::Client|"
     r"hyper::client::dispatch|^<?want::"),
    ("upstream client dispatch", "file", r"/hyper-[\d.]+/src/client/|/want-[\d.]+/|"
     r"/tokio-[\d.]+/src/sync/(mpsc|oneshot)"),
    ("h2 codec + HPACK", "file", r"/h2-[\d.]+/|/hyper-[\d.]+/src/proto/h2/"),
    ("hyper HTTP/1 codec", "file", r"/hyper-[\d.]+/src/proto/h1/|/httparse-"),
    ("hyper (other)", "file", r"/hyper-[\d.]+/|/hyper-util-|/http-body"),
    ("http types (HeaderMap, Uri, Bytes)", "file", r"/http-[\d.]+/|/bytes-[\d.]+/"),
    ("attempt + timers", "file", r"/tokio-[\d.]+/src/(time|runtime/time)/"),
    ("tokio runtime + I/O", "file", r"/tokio-[\d.]+/|/mio-[\d.]+/"),
    ("metrics", "file", r"/metrics(-util|-exporter-prometheus)?-[\d.]+/"),
    ("our HTTP/1 server (proxy::h1)", "fn", r"switchyard::proxy::(h1::|hygiene::io::h1)"),
    ("our HPACK (proxy::h2::hpack)", "fn", r"switchyard::proxy::h2::hpack"),
    ("our HTTP/2 server (proxy::h2)", "fn", r"switchyard::proxy::h2::"),
    ("head check/hygiene", "fn", r"switchyard::proxy::hygiene"),
    ("header policy", "fn", r"switchyard::wire::(headers|forwarded)|switchyard::.*forwarded"),
    ("routing", "fn", r"switchyard::router"),
    ("attempt + timers", "fn", r"switchyard::(proxy::attempt|wire::deadline)"),
    ("metrics", "fn", r"switchyard::.*(metrics|telemetry)"),
    ("access log", "fn", r"switchyard::.*(access_log|log_text)"),
    ("upstream client dispatch", "fn", r"switchyard::upstream::"),
    ("our HTTP/1 server (proxy::h1)", "file", SY + r"proxy/(h1/|hygiene/io/h1)"),
    ("our HPACK (proxy::h2::hpack)", "file", SY + r"proxy/h2/hpack/"),
    ("our HTTP/2 server (proxy::h2)", "file", SY + r"proxy/h2/"),
    ("head check/hygiene", "file", SY + r"proxy/hygiene"),
    ("header policy", "file", SY + r"wire/(headers|forwarded)|" + SY + r".*forwarded"),
    ("routing", "file", SY + r"router"),
    ("attempt + timers", "file", SY + r"proxy/attempt|" + SY + r"wire/deadline"),
    ("metrics", "file", SY + r".*(metrics|telemetry)"),
    ("access log", "file", SY + r".*(access_log|log_text)"),
    ("upstream client dispatch", "file", SY + r"upstream/"),
    ("request plumbing (proxy server/stack/handler)", "fn",
     r"switchyard::proxy::(server|stack|handler|body|request_body|listener|woken)"),
    ("switchyard (other)", "fn", r"switchyard::"),
    ("h2 codec + HPACK", "fn", r"^<?h2::|drop_in_place<h2::"),
    ("hyper HTTP/1 codec", "fn", r"hyper::proto::h1|^<?httparse::"),
    ("hyper (other)", "fn", r"^<?hyper(_util)?::|drop_in_place<hyper"),
    ("http types (HeaderMap, Uri, Bytes)", "fn", r"^<?(http|bytes)::|"
     r"drop_in_place<\[?(http|bytes)::|drop_in_place<alloc::vec::Vec<http::"),
    ("attempt + timers", "fn", r"^<?tokio::(time|runtime::time)::"),
    ("tokio runtime + I/O", "fn", r"^<?(tokio|mio)::|drop_in_place<tokio::"),
]
OTHER = "other"
COMPILED = [(layer, kind, re.compile(rx)) for layer, kind, rx in RULES]
LAYERS = list(dict.fromkeys(layer for layer, _, _ in RULES)) + [OTHER]


def classify(fn, path):
    for layer, kind, rx in COMPILED:
        if rx.search(fn if kind == "fn" else path):
            return layer
    return OTHER


def classify_name(fn):
    """The layer by function name alone: where inlined code was inlined into."""
    for layer, kind, rx in COMPILED:
        if kind == "fn" and rx.search(fn):
            return layer
    return OTHER


def read_dump(dump):
    """Self cost {(function, source file): Ir} and call cost {(caller, caller's source file,
    callee): inclusive Ir} from a callgrind.out file (one event, Ir).

    The format: `fn=`/`fl=`/`fi=`/`fe=` lines set the current function and file (with
    `(id) name` compression, later referred to by `(id)` alone); a cost line is positions then
    the count; the cost line after a `calls=` line is the callee's (`cfn=`) inclusive cost,
    kept apart from the self cost.
    """
    names = {}
    costs = collections.Counter()
    calls = collections.Counter()
    fn = fl = cur = callee = ""
    in_call = False

    def name(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        key = (kind, m.group(1))
        if m.group(2) is not None:
            names[key] = m.group(2)
        return names.get(key, "")

    with open(dump, errors="replace") as f:
        for line in f:
            c = line[0] if line else ""
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) >= 2 else 0
                if in_call:
                    in_call = False
                    calls[(fn, cur, callee)] += ir
                else:
                    costs[(fn, cur)] += ir
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "fn":
                fn, cur = name("fn", value), fl
            elif key == "fl":
                fl = cur = name("fl", value)
            elif key in ("fi", "fe"):
                # fi/fe share fl's name table.
                cur = name("fl", value)
            elif key == "cfn":
                callee = name("fn", value)
            elif key in ("cfl", "cfi"):
                name("fl", value)
            elif key in ("ob", "cob"):
                name("ob", value)
            elif key == "calls":
                in_call = True
    return costs, calls


def demangle(costs, calls):
    """Demangle names callgrind left mangled (it normally demangles; c++filt if present)."""
    mangled = sorted({fn for fn, _ in costs if fn.startswith(("_ZN", "_R"))}
                     | {k[i] for k in calls for i in (0, 2) if k[i].startswith(("_ZN", "_R"))})
    if not mangled or not shutil.which("c++filt"):
        return costs, calls
    out = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True,
                         text=True).stdout.splitlines()
    table = dict(zip(mangled, out))
    fixed = collections.Counter()
    for (fn, path), ir in costs.items():
        fixed[(table.get(fn, fn), path)] += ir
    fixed_calls = collections.Counter()
    for (fn, path, callee), ir in calls.items():
        fixed_calls[(table.get(fn, fn), path, table.get(callee, callee))] += ir
    return fixed, fixed_calls


def group(costs):
    """{layer: Ir}, and {layer: {function: Ir}} (largest first with most_common)."""
    layers = collections.Counter()
    functions = collections.defaultdict(collections.Counter)
    for (fn, path), ir in costs.items():
        layer = classify(fn, path)
        layers[layer] += ir
        functions[layer][f"{fn}  [{path}]"] += ir
    return layers, functions


LABELS = {"h1": "HTTP/1.1 (wrk, 50 conns)", "h2": "h2c (h2load 10 × 10)",
          "close": "conn per request (wrk, 50 conns, close)"}

# Layers whose code every other layer calls: their cost is also split among their callers.
SHARED = ("http types (HeaderMap, Uri, Bytes)", "memcpy", "allocator")


def callers(costs, calls, layer, depth=6):
    """`layer`'s self cost split among the layers that call into it, in proportion to each
    call site's inclusive cost. A caller inside `layer` itself (`__rust_alloc` calling
    `mi_malloc`, `HeaderMap::insert` calling `try_insert2`) passes its part on to its own
    callers, up to `depth` levels; what is left after that stays with `layer`. Code of
    `layer` inlined into a function of another layer is that function's layer's."""
    self_by_fn = collections.Counter()
    split = collections.Counter()
    for (fn, path), ir in costs.items():
        if classify(fn, path) == layer:
            home = classify_name(fn)
            if home in (layer, OTHER):
                self_by_fn[fn] += ir
            else:
                split[home] += ir
    into = collections.defaultdict(collections.Counter)
    for (fn, path, callee), ir in calls.items():
        into[callee][(fn, classify(fn, path))] += ir

    def spread(fn, amount, level):
        total = sum(ir for (caller, _), ir in into[fn].items() if caller != fn)
        if not total:
            split["(no caller recorded)" if level == 0 else layer] += amount
            return
        for (caller, caller_layer), ir in into[fn].items():
            if caller == fn:
                continue
            part = amount * ir / total
            if caller_layer == layer and level < depth:
                spread(caller, part, level + 1)
            else:
                split[caller_layer] += part

    for fn, ir in self_by_fn.items():
        spread(fn, ir, 0)
    return split


def load_and_dump(switchyard, work, duration, totals=(), tests=("h1", "h2")):
    """Start the nginx backend and switchyard under callgrind; returns {test: (dump, served)}
    and, for each name in `totals` ("switchyard", "haproxy"), instructions.py's own figure
    {"h1", "h2"} measured right after against the same backend, as a cross-check."""
    os.chmod(work, 0o755)
    b1, b2, port, admin = (run.free_port() for _ in range(4))
    # The backend of run.py's main(): nginx answering `ok` on two ports, one worker.
    with open(f"{work}/backend.conf", "w") as f:
        temp = " ".join(f"{k}_temp_path {work}/{k};" for k in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        f.write(f"""worker_processes 1; daemon off; worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }} pid {work}/backend.pid; error_log {work}/backend.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  server {{ listen 127.0.0.1:{b1}; listen 127.0.0.1:{b2};
    location = / {{ return 200 "ok"; }} }} }}""")
    with open(f"{work}/switchyard.toml", "w") as f:
        f.write(scenarios.switchyard_config(port, admin, b1, b2))
    backend = run.Server("backend", ["nginx", "-c", f"{work}/backend.conf", "-p", work], b1, work)
    out = {}
    try:
        for test in tests:
            name = f"breakdown-{test}"
            dump = os.path.join(work, f"callgrind.{name}")
            srv = run.Server(name, ["valgrind", "--tool=callgrind",
                                    f"--callgrind-out-file={dump}", switchyard, "run", "-c",
                                    f"{work}/switchyard.toml"], port, work, start_deadline=60)
            try:
                load = instructions.load(test, port, port)
                load(instructions.WARMUP_S)
                subprocess.run(["callgrind_control", "-z", str(srv.proc.pid)], check=True,
                               capture_output=True)
                served = load(duration)["requests"]
                subprocess.run(["callgrind_control", "-d", str(srv.proc.pid)], check=True,
                               capture_output=True)
            finally:
                srv.stop()
            # As in instructions.py: part 1 holds the counts from the zeroing to the dump.
            out[test] = (f"{dump}.1", served)
        checks = {}
        if "switchyard" in totals:
            checks["switchyard"] = instructions.measure(
                "switchyard", [switchyard, "run", "-c", f"{work}/switchyard.toml"], port, port,
                work, duration, tests)
        if "haproxy" in totals:
            hp, hp2 = run.free_port(), run.free_port()
            with open(f"{work}/haproxy.cfg", "w") as f:
                f.write(scenarios.haproxy_config(hp, b1, b2, h2_port=hp2))
            checks["haproxy"] = instructions.measure(
                "haproxy", ["haproxy", "-f", f"{work}/haproxy.cfg"], hp, hp2, work, duration,
                tests)
    finally:
        backend.stop()
    return out, checks


def summary(dump):
    with open(dump) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    return int(m.group(1)) if m else 0


def report(results, top):
    """`results`: {test: {"layers", "functions", "callers", "served", "summary"}}."""
    tests = [t for t in instructions.TESTS if t in results]
    label = LABELS
    print("\n| layer | " + " | ".join(f"{label[t]} instr/req | share" for t in tests) + " |")
    print("|---" * (1 + 2 * len(tests)) + "|")
    first = results[tests[0]]["layers"]
    for layer in sorted(LAYERS, key=lambda name: -first.get(name, 0)):
        cells = []
        for t in tests:
            r = results[t]
            ir = r["layers"].get(layer, 0)
            cells.append(f"{ir / r['served']:,.0f} | {100 * ir / sum(r['layers'].values()):.1f} %")
        print(f"| {layer} | " + " | ".join(cells) + " |")
    cells = [f"**{sum(results[t]['layers'].values()) / results[t]['served']:,.0f}** | 100 %"
             for t in tests]
    print("| **total** | " + " | ".join(cells) + " |")
    for layer in SHARED:
        print(f"\n`{layer}` by the layer that calls into it (instr/req):")
        for t in tests:
            r = results[t]
            split = r["callers"][layer]
            parts = ", ".join(f"{name} {ir / r['served']:,.0f}"
                              for name, ir in split.most_common(8))
            print(f"  {label[t]}: {parts}")
    for t in tests:
        r = results[t]
        grouped = sum(r["layers"].values())
        print(f"\n{label[t]}: {r['served']:,} requests; callgrind summary "
              f"{r['summary'] / r['served']:,.0f} instr/req, grouped "
              f"{grouped / r['served']:,.0f} ({100 * grouped / max(r['summary'], 1):.2f} %)")
        print(f"top {top} functions in `{OTHER}` (instr/req):")
        for fn, ir in r["functions"][OTHER].most_common(top):
            print(f"  {ir / r['served']:8,.0f}  {fn[:160]}")


def detail(results, layer, top):
    """The largest functions of one layer, to check or refine the rules."""
    for t, r in results.items():
        print(f"\n{t}: top {top} functions in `{layer}` (instr/req):")
        for fn, ir in r["functions"][layer].most_common(top):
            print(f"  {ir / r['served']:8,.0f}  {fn[:160]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--switchyard", help="the binary to measure (release, with debuginfo)")
    ap.add_argument("--duration", type=int, default=5, help="seconds of counted load per test")
    ap.add_argument("--keep", help="copy the dumps and request counts to this directory")
    ap.add_argument("--from-dumps", help="group dumps saved with --keep instead of running")
    ap.add_argument("--top", type=int, default=10, help="functions listed for `other`")
    ap.add_argument("--check", action="store_true",
                    help="also run instructions.py's count on the same binary (the totals "
                    "should agree within repeat noise)")
    ap.add_argument("--haproxy", action="store_true",
                    help="also count HAProxy's instructions per request (instructions.py)")
    ap.add_argument("--tests", default="h1,h2",
                    help="comma-separated loads: h1 (wrk, 50 keep-alive conns), h2 (h2load "
                    "10 x 10), close (wrk, 50 conns, `Connection: close`: a new connection per "
                    "request)")
    ap.add_argument("--detail", action="append", default=[], metavar="LAYER",
                    help="also list the largest functions of this layer (repeatable)")
    args = ap.parse_args()
    tests = [t for t in args.tests.split(",") if t]
    unknown = set(tests) - set(instructions.TESTS)
    if unknown:
        ap.error(f"unknown test(s) {sorted(unknown)}; known: {', '.join(instructions.TESTS)}")
    if args.from_dumps:
        dumps = {}
        for t in tests:
            if not os.path.exists(os.path.join(args.from_dumps, f"{t}.served")):
                continue
            with open(os.path.join(args.from_dumps, f"{t}.served")) as f:
                dumps[t] = (os.path.join(args.from_dumps, f"{t}.callgrind"), int(f.read()))
    else:
        if not args.switchyard:
            ap.error("--switchyard or --from-dumps is required")
        run.raise_nofile()
        work = tempfile.mkdtemp(prefix="switchyard-breakdown-")
        totals = ["switchyard"] * args.check + ["haproxy"] * args.haproxy
        dumps, checks = load_and_dump(os.path.abspath(args.switchyard), work, args.duration,
                                      totals, tests)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for t, (dump, served) in dumps.items():
                shutil.copy(dump, os.path.join(args.keep, f"{t}.callgrind"))
                with open(os.path.join(args.keep, f"{t}.served"), "w") as f:
                    f.write(str(served))
    results = {}
    for t, (dump, served) in dumps.items():
        costs, calls = demangle(*read_dump(dump))
        layers, functions = group(costs)
        results[t] = {"layers": layers, "functions": functions, "served": max(served, 1),
                      "summary": summary(dump),
                      "callers": {layer: callers(costs, calls, layer) for layer in SHARED}}
    report(results, args.top)
    for layer in args.detail:
        detail(results, layer, args.top)
    if not args.from_dumps and checks:
        print("\ninstructions.py's figure, measured right after (instr/req):")
        for name, fig in checks.items():
            print(f"  {name}: " + ", ".join(f"{LABELS[t]} {fig[t]:,.0f}" for t in tests))
    if not args.from_dumps:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
