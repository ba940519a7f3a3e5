#!/usr/bin/env python3
"""Splits moderate-rate appends into their steps from a `perf script` dump of kernel
tracepoints (see scripts/trace-append-latency). Usage: trace-append-latency.py TRACE SERVER_PID
BENCH_PID"""

import bisect
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def parse(path):
    with open(path, errors="replace") as lines:
        for line in lines:
            match = LINE.match(line)
            if match:
                comm, pid, tid, _cpu, time, event, trace = match.groups()
                yield comm, int(pid), int(tid), float(time) * 1e6, event, trace


def field(trace, name):
    match = re.search(name + r"[ =]([^ ,]+)", trace)
    return match.group(1) if match else None


def percentiles(values):
    if not values:
        return "n/a"
    values = sorted(values)

    def at(q):
        return values[min(len(values) - 1, int(q * len(values)))]

    return f"p50 {at(0.5):7.1f}  p90 {at(0.9):7.1f}  p99 {at(0.99):7.1f}  mean {sum(values) / len(values):7.1f}"


def main():
    path, server_pid, bench_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client_sends, client_recvs, server_sends, server_recvs = [], [], [], []
    submits = []  # (time, tid, opcode, req)
    completes = {}  # req -> [times]
    results = {}  # (req, completion time) -> result
    switch_in = defaultdict(list)  # tid -> times switched in
    switch_out = defaultdict(list)  # tid -> (time switched out, state left in)
    wakeups = defaultdict(list)  # tid -> times woken
    block = defaultdict(list)  # kind -> [(issue, complete)]
    block_open = defaultdict(list)
    for comm, pid, tid, time, event, trace in parse(path):
        if event in ("syscalls:sys_exit_sendmsg", "syscalls:sys_exit_sendmmsg"):
            ret = int(trace.strip(), 16) if trace.strip().startswith("0x") else int(trace.strip() or 0)
            if ret <= 0:
                continue
            if pid == bench_pid:
                client_sends.append((time, ret))
            elif pid == server_pid:
                server_sends.append((time, ret))
        elif event in ("syscalls:sys_exit_recvmmsg", "syscalls:sys_exit_recvmsg"):
            text = trace.strip()
            ret = int(text, 16) if text.startswith("0x") else int(text or 0)
            if ret <= 0 or ret > (1 << 62):
                continue
            if pid == bench_pid:
                client_recvs.append(time)
            elif pid == server_pid:
                server_recvs.append(time)
        elif event == "io_uring:io_uring_submit_req" and pid == server_pid:
            submits.append((time, tid, field(trace, "opcode"), field(trace, "req")))
        elif event == "io_uring:io_uring_complete":
            req = field(trace, "req")
            completes.setdefault(req, []).append(time)
            results[(req, time)] = int(field(trace, "result") or 0)
        elif event == "sched:sched_switch":
            prev, state = field(trace, "prev_pid"), field(trace, "prev_state")
            if prev:
                switch_out[int(prev)].append((time, state))
            nxt = field(trace, "next_pid")
            if nxt:
                switch_in[int(nxt)].append(time)
        elif event == "sched:sched_wakeup":
            woken = field(trace, "pid")
            if woken:
                wakeups[int(woken)].append(time)
        elif event in ("block:block_rq_issue", "block:block_rq_complete"):
            parts = trace.split()
            if len(parts) < 2:
                continue
            rwbs = parts[1]
            kind = "flush" if "F" in rwbs and "W" not in rwbs else ("write" if "W" in rwbs else "other")
            if event.endswith("issue"):
                block_open[kind].append(time)
            elif block_open[kind]:
                block[kind].append((block_open[kind].pop(0), time))

    fsyncs = [s for s in submits if s[2] and s[2].startswith("FSYNC")]
    if not fsyncs:
        print("no io_uring FSYNC submitted by the server in the trace")
        return
    executor = fsyncs[0][1]
    # glommio links an 8-byte eventfd WRITE to each preemption TIMEOUT it arms; the log's
    # writes are the ones that complete with at least a block.
    def done_after(req, time):
        return next((t for t in completes.get(req, []) if t >= time), None)

    writes = [
        s
        for s in submits
        if s[2]
        and s[2].startswith("WRITE")
        and results.get((s[3], done_after(s[3], s[0])), 0) >= 512
    ]
    write_times = [w[0] for w in writes]
    fsync_times = [f[0] for f in fsyncs]
    big_sends = [t for t, size in client_sends if size > 4096]
    server_recvs.sort()
    server_sends.sort()
    client_recvs.sort()
    switches = sorted(switch_in[executor])
    wakes = sorted(wakeups[executor])
    send_times = [t for t, _ in server_sends]

    def first_after(times, t):
        i = bisect.bisect_right(times, t)
        return times[i] if i < len(times) else None

    def last_before(times, t):
        i = bisect.bisect_left(times, t)
        return times[i - 1] if i > 0 else None

    def count_between(times, a, b):
        return bisect.bisect_left(times, b) - bisect.bisect_right(times, a)

    outs = sorted(switch_out[executor])

    def off_cpu(a, b):
        """Microseconds of [a, b) the executor spent preempted (runnable) and asleep."""
        preempted = asleep = 0.0
        i = bisect.bisect_left(outs, (a, ""))
        while i < len(outs) and outs[i][0] < b:
            out_time, state = outs[i]
            back = first_after(switches, out_time)
            end = min(back if back is not None else b, b)
            if state and state.startswith("R"):
                preempted += end - out_time
            else:
                asleep += end - out_time
            i += 1
        return preempted, asleep

    steps = defaultdict(list)
    response_sizes = []
    dropped = 0
    for index, (fs_time, _tid, _op, req) in enumerate(fsyncs):
        fs_done = next((t for t in completes.get(req, []) if t >= fs_time), None)
        w_time = last_before(write_times, fs_time)
        if fs_done is None or w_time is None:
            dropped += 1
            continue
        w_req = writes[bisect.bisect_left(write_times, w_time)][3]
        w_done = next((t for t in completes.get(w_req, []) if t >= w_time), None)
        c_send = last_before(big_sends, w_time)
        if w_done is None or c_send is None:
            dropped += 1
            continue
        s_recv = first_after(server_recvs, c_send)
        s_send = first_after(send_times, fs_done)
        c_recv = first_after(client_recvs, s_send) if s_send else None
        previous_fsync = fsync_times[index - 1] if index > 0 else None
        overlapping = (
            (previous_fsync is not None and previous_fsync > c_send)
            or count_between(big_sends, c_send, fs_done) > 0
            or s_recv is None
            or s_recv > w_time
            or c_recv is None
            or c_recv - c_send > 20_000
        )
        if overlapping:
            dropped += 1
            continue
        response_sizes.append(server_sends[bisect.bisect_left(send_times, s_send)][1])
        steps["1 client sendmsg -> server recvmmsg returns"].append(s_recv - c_send)
        steps["2 server recvmmsg -> io_uring WRITE submitted"].append(w_time - s_recv)
        preempted, asleep = off_cpu(s_recv, w_time)
        steps["  in step 2: executor preempted (runnable, not running)"].append(preempted)
        steps["  in step 2: executor asleep"].append(asleep)
        preempted, asleep = off_cpu(fs_done, s_send)
        steps["  in step 6: executor preempted"].append(preempted)
        preempted, asleep = off_cpu(c_send, c_recv)
        steps["  whole append: executor preempted"].append(preempted)
        steps["3 WRITE submitted -> completed"].append(w_done - w_time)
        steps["4 WRITE completed -> FSYNC submitted"].append(fs_time - w_done)
        steps["5 FSYNC submitted -> completed"].append(fs_done - fs_time)
        steps["6 FSYNC completed -> server sendmsg of the response"].append(s_send - fs_done)
        steps["7 server sendmsg -> client recvmmsg returns"].append(c_recv - s_send)
        steps["= client sendmsg -> client recvmmsg"].append(c_recv - c_send)
        steps["  server executor switched in (count per append)"].append(
            count_between(switches, c_send, s_send)
        )
        steps["  server executor woken (count per append)"].append(count_between(wakes, c_send, s_send))
        wake_after_send = first_after(switches, c_send)
        if wake_after_send is not None and wake_after_send < s_recv:
            steps["  client sendmsg -> server executor switched in"].append(wake_after_send - c_send)
        complete_to_run = first_after(switches, fs_done)
        if complete_to_run is not None and complete_to_run < s_send:
            steps["  FSYNC completed -> server executor switched in"].append(complete_to_run - fs_done)
    cycles = len(steps["= client sendmsg -> client recvmmsg"])
    print(f"\nappends traced: {cycles} (dropped {dropped} overlapping or incomplete); executor tid {executor}")
    print("step (microseconds; counts for the lines marked as such)")
    for name in sorted(steps):
        print(f"  {name:58s} {percentiles(steps[name])}")
    for kind in ("write", "flush"):
        durations = [b - a for a, b in block[kind]]
        print(f"  device {kind:5s} (block_rq_issue -> complete, all in the trace) {percentiles(durations)}")
    if response_sizes:
        print(f"  response datagram bytes: {percentiles(response_sizes)}")
    ops = defaultdict(int)
    for s in submits:
        ops[s[2]] += 1
    print(f"  server io_uring submissions by opcode over the trace: {dict(ops)}; FSYNCs {len(fsyncs)}")


main()
