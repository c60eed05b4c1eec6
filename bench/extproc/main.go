// Command extproc benchmarks the PHI sidecar through its real ext_proc
// gRPC stream, driven the way Envoy drives it (one stream per request:
// request headers, then response headers):
//
//  1. overhead: classification + tagging + admission at a fixed rate
//     (default 5,000 requests/s), from opening the stream to Envoy
//     receiving the header mutation; the real `medmesh sidecar` process
//     beside a do-nothing ext_proc server in its own process (the floor),
//     over loopback TCP and over a unix socket, and the sidecar again
//     with the batched audit trail on; these five run in turn, -rounds
//     times, and each figure is the median over rounds;
//  2. overload: a backend with fixed capacity (slots x service time)
//     driven open-loop at 3x its capacity with a clinical mix (1%
//     critical, 10% high, 30% medium, 40% low, 19% background), once
//     through the priority scheduler and once through a FIFO scheduler
//     with the same limit, queue space and maximum waits; plus critical
//     requests alone at 30% load for the unloaded baseline.
//
// It prints a table per run and BENCH lines for `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"medmesh/internal/procstat"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// paths the classifier maps to each priority (checked at start).
var paths = [classify.NumPriorities]string{
	"/vitals/alerts/cardiac_arrest_alert",
	"/vitals/ecg_realtime",
	"/dicomweb/studies/1.2/series/3.4/instances/5.6",
	"/api/records/1",
	"/devices/d1/device_status",
}

// mix is the overload experiment's share per priority, in percent.
var mix = [classify.NumPriorities]int{1, 10, 30, 40, 19}

func main() {
	rate := flag.Int("rate", 5000, "overhead: requests per second")
	overheadFor := flag.Duration("overhead-duration", 4*time.Second, "overhead: measured duration of each run (after 1s warm-up)")
	rounds := flag.Int("rounds", 5, "overhead: rounds of the sidecar / floor / audited runs, interleaved in a new order each round; figures are medians over rounds")
	overheadOnly := flag.Bool("overhead-only", false, "run the overhead experiment only (not the overload one)")
	slots := flag.Int("slots", 64, "overload: backend capacity in concurrent requests (also the scheduler's limit)")
	service := flag.Duration("service", 80*time.Millisecond, "overload: backend service time per request")
	overloadFor := flag.Duration("overload-duration", 15*time.Second, "overload: duration of each run")
	factor := flag.Float64("overload-factor", 3, "overload: offered load as a multiple of capacity")
	medmeshBin := flag.String("medmesh", "bin/medmesh", "the medmesh binary (make build) run as a separate sidecar process")
	echoAddr := flag.String("serve-echo", "", "internal: serve the do-nothing ext_proc server here (the baseline's own process)")
	echoHealth := flag.String("serve-health", "", "internal: with -serve-echo, the readiness address")
	echoAnswer := flag.Bool("serve-answer", false, "internal: with -serve-echo, answer request headers as the sidecar does")
	weighted := flag.Bool("weighted-floor", true, "overhead: also measure the do-nothing server built into a binary linked like medmesh (built with go build first; see weighted.go)")
	seqRequests := flag.Int("seq-requests", 5000, "overhead: requests sent one at a time to each server after its paced run")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the overhead run to this file")
	flag.StringVar(&pinClient, "pin-client", "", "run this program (the load generator, standing in for Envoy) on these CPUs (taskset list, e.g. 0)")
	flag.StringVar(&pinServer, "pin-server", "", "run the ext_proc server processes on these CPUs (taskset list, e.g. 1)")
	flag.Parse()
	pinSelf()
	// Same setting as `medmesh sidecar` (see its startExtProc): fewer GC
	// cycles for a small heap. The do-nothing server gets it too, so the
	// floor differs from the sidecar only in the extension's work; here
	// it also covers the Envoy side, which runs in this process.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if *echoAddr != "" {
		var answer *extprocv3.ProcessingResponse
		if *echoAnswer {
			answer = sidecarAnswer()
		}
		serveEcho(*echoAddr, *echoHealth, answer)
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		pprof.StartCPUProfile(f)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		// Latency tails on a shared machine follow its load; say what it was.
		fmt.Printf("load average at start: %s", b)
	}
	ext, stop := server(sched.Config{})
	p50, p99, winP99, cpu := overhead(ext, *rate, *overheadFor)
	stop()
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	// The figures that compare the sidecar with the floor are measured in
	// rounds, each configuration once per round in turn, so that a burst
	// of load from another tenant of the machine falls on all of them
	// alike rather than on one; each figure is the median over rounds,
	// and the spread is printed beside it.
	type proc struct {
		name               string
		bin, floor         string
		audit, uds, answer bool
	}
	procs := []proc{
		{"sidecar", *medmeshBin, "", false, false, false},
		{"floor", "", "", false, false, false},
		{"sidecar-unix", *medmeshBin, "", false, true, false},
		{"floor-unix", "", "", false, true, false},
		{"audited", *medmeshBin, "", true, false, false},
		{"floor-same-answer", "", "", false, false, true},
	}
	if *weighted {
		dir, err := os.MkdirTemp("", "medmesh-extproc-floor-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		bin, err := buildWeightedFloor(dir)
		if err != nil {
			fail(err)
		}
		self, _ := os.Executable()
		fmt.Printf("machine code: medmesh %.0f MiB, do-nothing server %.0f MiB, linked like medmesh %.0f MiB\n", textMiB(*medmeshBin), textMiB(self), textMiB(bin))
		procs = append(procs, proc{"floor-weighted", "", bin, false, false, false})
	}
	p50s := make([][]float64, len(procs))
	p99s := make([][]float64, len(procs))
	// The server process's CPU time per request does not depend on what
	// else the machine runs, unlike its latency: it shows the extension's
	// cost beside the floor's even on a busy machine.
	cpus := make([][]float64, len(procs))
	wins := make([][]float64, len(procs)) // median over 1 s windows of each window's p99
	// One request at a time as well (closed loop): no queueing behind
	// other requests, so the tail is the exchange's own and the
	// scheduler's wake-ups, not the 2 cores' backlog at 5,000/s.
	seq50s := make([][]float64, len(procs))
	seq99s := make([][]float64, len(procs))
	// Each round runs every configuration once, in a new order, so that
	// no configuration always follows another (a slow start-up, a page
	// cache warmed by the one before); the ratios are taken within a
	// round, between runs seconds apart, and their median over rounds is
	// the figure (BENCH ..._ratio). On a small shared machine a p99 moves
	// by tens of percent from one run to the next; a paired ratio moves
	// less than the ratio of two medians.
	order := rand.New(rand.NewPCG(7, 11))
	for r := range *rounds {
		for _, i := range order.Perm(len(procs)) {
			pr := procs[i]
			c, stopProc, pid := sidecarProcess(pr.bin, pr.floor, pr.audit, pr.uds, pr.answer)
			before, _ := procstat.Read(pid)
			a, b, w, _ := overhead(c, *rate, *overheadFor)
			after, _ := procstat.Read(pid)
			q50, q99 := sequential(c, *seqRequests)
			seq50s[i], seq99s[i] = append(seq50s[i], q50), append(seq99s[i], q99)
			stopProc()
			n := float64(*rate) * (1 + overheadFor.Seconds()) // warm-up included
			p50s[i], p99s[i], wins[i] = append(p50s[i], a), append(p99s[i], b), append(wins[i], w)
			cpus[i] = append(cpus[i], float64((after.CPU-before.CPU).Microseconds())/n)
		}
		fmt.Printf("overhead round %d of %d: p99", r+1, *rounds)
		for i, pr := range procs {
			fmt.Printf(" %s %.0f us", pr.name, p99s[i][r])
		}
		fmt.Printf("; sidecar/floor %.2f, unix %.2f, audited/sidecar %.2f\n", p99s[0][r]/p99s[1][r], p99s[2][r]/p99s[3][r], p99s[4][r]/p99s[0][r])
	}
	ratioOf := func(p [][]float64, a, b int) []float64 {
		var v []float64
		for r := range p[a] {
			v = append(v, p[a][r]/p[b][r])
		}
		return v
	}
	ratio := func(a, b int) []float64 { return ratioOf(p99s, a, b) }
	med := func(v []float64) float64 { w := slices.Clone(v); slices.Sort(w); return w[len(w)/2] }
	spread := func(v []float64) string { return fmt.Sprintf("%.0f-%.0f", slices.Min(v), slices.Max(v)) }
	spread2 := func(v []float64) string { return fmt.Sprintf("%.2f-%.2f", slices.Min(v), slices.Max(v)) }
	tcpRatio, unixRatio, auditRatio := ratio(0, 1), ratio(2, 3), ratio(4, 0)
	s50, s99 := med(p50s[0]), med(p99s[0])
	e50, e99 := med(p50s[1]), med(p99s[1])
	u50, u99 := med(p50s[2]), med(p99s[2])
	f50, f99 := med(p50s[3]), med(p99s[3])
	a50, a99 := med(p50s[4]), med(p99s[4])
	x50, x99 := med(p50s[5]), med(p99s[5])
	echo, stopEcho := serveLoopback(newEchoServer(nil))
	b50, b99, _, _ := overhead(echo, *rate, *overheadFor)
	stopEcho()
	c50, c99 := core(30000)
	fmt.Printf("overhead at %d/s, one ext_proc stream per request as Envoy opens them; the Go client stands in for Envoy;\n", *rate)
	fmt.Printf("median of %d rounds (p99 range over rounds):\n", *rounds)
	fmt.Printf("  medmesh sidecar, its own process, TCP  p50 %5.0f us  p99 %6.0f us (%s)  (as it runs beside Envoy)\n", s50, s99, spread(p99s[0]))
	fmt.Printf("  do-nothing ext_proc, own process, TCP  p50 %5.0f us  p99 %6.0f us (%s)  (the floor for the line above)\n", e50, e99, spread(p99s[1]))
	fmt.Printf("  medmesh sidecar, unix socket           p50 %5.0f us  p99 %6.0f us (%s)\n", u50, u99, spread(p99s[2]))
	fmt.Printf("  do-nothing ext_proc, unix socket       p50 %5.0f us  p99 %6.0f us (%s)\n", f50, f99, spread(p99s[3]))
	fmt.Printf("  sidecar with the audit trail on, TCP   p50 %5.0f us  p99 %6.0f us (%s)  (--audit-durability batch)\n", a50, a99, spread(p99s[4]))
	fmt.Printf("  do-nothing, the sidecar's answer, TCP  p50 %5.0f us  p99 %6.0f us (%s)  (what decoding the answer costs Envoy's side)\n", x50, x99, spread(p99s[5]))
	fmt.Printf("  extension in the client's process      p50 %5.0f us  p99 %6.0f us   (client and server share 2 cores' scheduler)\n", p50, p99)
	fmt.Printf("  do-nothing ext_proc, same process      p50 %5.0f us  p99 %6.0f us   (the gRPC + loopback + Go runtime floor)\n", b50, b99)
	fmt.Printf("  extension core alone                   p50 %5.1f us  p99 %6.1f us   (classify, tag, admit, release; no gRPC)\n", c50, c99)
	fmt.Printf("BENCH extproc_overhead_p50_us=%.0f\n", s50)
	fmt.Printf("BENCH extproc_overhead_p99_us=%.0f\n", s99)
	fmt.Printf("BENCH extproc_floor_p50_us=%.0f\n", e50)
	fmt.Printf("BENCH extproc_floor_p99_us=%.0f\n", e99)
	fmt.Printf("  p99 ratios, median of the rounds' paired ratios (range): sidecar/floor TCP %.2f (%s), unix %.2f (%s); audited/unaudited %.2f (%s)\n",
		med(tcpRatio), spread2(tcpRatio), med(unixRatio), spread2(unixRatio), med(auditRatio), spread2(auditRatio))
	fmt.Printf("BENCH extproc_overhead_vs_floor_p99_ratio=%.2f\n", med(tcpRatio))
	fmt.Printf("BENCH extproc_floor_same_answer_p50_us=%.0f\n", x50)
	fmt.Printf("BENCH extproc_floor_same_answer_p99_us=%.0f\n", x99)
	fmt.Printf("BENCH extproc_overhead_unix_p50_us=%.0f\n", u50)
	fmt.Printf("BENCH extproc_overhead_unix_p99_us=%.0f\n", u99)
	fmt.Printf("BENCH extproc_floor_unix_p50_us=%.0f\n", f50)
	fmt.Printf("BENCH extproc_floor_unix_p99_us=%.0f\n", f99)
	fmt.Printf("BENCH extproc_overhead_vs_floor_unix_p99_ratio=%.2f\n", med(unixRatio))
	fmt.Printf("BENCH extproc_audit_p50_us=%.0f\n", a50)
	fmt.Printf("BENCH extproc_audit_p99_us=%.0f\n", a99)
	fmt.Printf("BENCH extproc_unaudited_p99_us=%.0f\n", s99)
	fmt.Printf("BENCH extproc_audit_vs_unaudited_p99_ratio=%.2f\n", med(auditRatio))
	// Earlier names of the audited figures, kept for comparisons.
	fmt.Printf("BENCH extproc_overhead_audited_p50_us=%.0f\n", a50)
	fmt.Printf("BENCH extproc_overhead_audited_p99_us=%.0f\n", a99)
	fmt.Printf("  server process CPU per request, TCP: sidecar %.1f us, floor %.1f us, audited sidecar %.1f us, floor with the answer %.1f us; unix: sidecar %.1f us, floor %.1f us\n",
		med(cpus[0]), med(cpus[1]), med(cpus[4]), med(cpus[5]), med(cpus[2]), med(cpus[3]))
	// On a shared machine one stall of another tenant delays 1% of a
	// run's requests and becomes its p99; the median over 1 s windows of
	// each window's p99 shows what a request sees outside such stalls.
	fmt.Printf("  p99, median of 1 s windows: sidecar %.0f us, floor %.0f us, sidecar-unix %.0f us, floor-unix %.0f us, audited %.0f us\n",
		med(wins[0]), med(wins[1]), med(wins[2]), med(wins[3]), med(wins[4]))
	for i, name := range []string{"overhead", "floor", "overhead_unix", "floor_unix", "audit"} {
		fmt.Printf("BENCH extproc_%s_p99_us_median_1s_window=%.0f\n", name, med(wins[i]))
	}
	fmt.Printf("BENCH extproc_sidecar_cpu_us_per_request=%.1f\n", med(cpus[0]))
	fmt.Printf("BENCH extproc_floor_cpu_us_per_request=%.1f\n", med(cpus[1]))
	fmt.Printf("BENCH extproc_audit_cpu_us_per_request=%.1f\n", med(cpus[4]))
	seqTCP, seqUnix, seqAudit := ratioOf(seq99s, 0, 1), ratioOf(seq99s, 2, 3), ratioOf(seq99s, 4, 0)
	fmt.Printf("one request at a time (%d per run), median of %d rounds: p50 / p99 us\n", *seqRequests, *rounds)
	for i, pr := range procs {
		fmt.Printf("  %-18s %5.0f / %5.0f (p99 %s)\n", pr.name, med(seq50s[i]), med(seq99s[i]), spread(seq99s[i]))
	}
	fmt.Printf("  p99 ratios, median of paired ratios (range): sidecar/floor TCP %.2f (%s), unix %.2f (%s); audited/unaudited %.2f (%s)\n",
		med(seqTCP), spread2(seqTCP), med(seqUnix), spread2(seqUnix), med(seqAudit), spread2(seqAudit))
	for i, name := range []string{"overhead", "floor", "overhead_unix", "floor_unix", "audit"} {
		fmt.Printf("BENCH extproc_seq_%s_p50_us=%.0f\n", name, med(seq50s[i]))
		fmt.Printf("BENCH extproc_seq_%s_p99_us=%.0f\n", name, med(seq99s[i]))
	}
	fmt.Printf("BENCH extproc_seq_overhead_vs_floor_p99_ratio=%.2f\n", med(seqTCP))
	fmt.Printf("BENCH extproc_seq_overhead_vs_floor_unix_p99_ratio=%.2f\n", med(seqUnix))
	fmt.Printf("BENCH extproc_seq_audit_vs_unaudited_p99_ratio=%.2f\n", med(seqAudit))
	if len(procs) > 6 {
		// The floor linked like medmesh (weighted.go): the sidecar's
		// distance from it is the extension's cost alone.
		w := 6
		seqW, pacedW := ratioOf(seq99s, 0, w), ratio(0, w)
		fmt.Printf("  the do-nothing server linked like medmesh: one at a time p50 %.0f / p99 %.0f us, paced p50 %.0f / p99 %.0f us\n",
			med(seq50s[w]), med(seq99s[w]), med(p50s[w]), med(p99s[w]))
		fmt.Printf("  sidecar / that floor, p99, median of paired ratios (range): one at a time %.2f (%s), paced %.2f (%s)\n",
			med(seqW), spread2(seqW), med(pacedW), spread2(pacedW))
		fmt.Printf("  server process CPU per request, TCP: the do-nothing server linked like medmesh %.1f us\n", med(cpus[w]))
		fmt.Printf("BENCH extproc_floor_weighted_cpu_us_per_request=%.1f\n", med(cpus[w]))
		fmt.Printf("BENCH extproc_seq_floor_weighted_p50_us=%.0f\n", med(seq50s[w]))
		fmt.Printf("BENCH extproc_seq_floor_weighted_p99_us=%.0f\n", med(seq99s[w]))
		fmt.Printf("BENCH extproc_floor_weighted_p99_us=%.0f\n", med(p99s[w]))
		fmt.Printf("BENCH extproc_seq_overhead_vs_weighted_floor_p99_ratio=%.2f\n", med(seqW))
		fmt.Printf("BENCH extproc_overhead_vs_weighted_floor_p99_ratio=%.2f\n", med(pacedW))
	}
	fmt.Printf("BENCH extproc_inprocess_p50_us=%.0f\n", p50)
	fmt.Printf("BENCH extproc_inprocess_p99_us=%.0f\n", p99)
	fmt.Printf("BENCH extproc_inprocess_p99_us_median_1s_window=%.0f\n", winP99)
	fmt.Printf("BENCH extproc_baseline_p50_us=%.0f\n", b50)
	fmt.Printf("BENCH extproc_baseline_p99_us=%.0f\n", b99)
	fmt.Printf("BENCH extproc_core_p50_us=%.1f\n", c50)
	fmt.Printf("BENCH extproc_core_p99_us=%.1f\n", c99)
	fmt.Printf("BENCH extproc_cpu_us_per_request=%.0f\n", cpu)
	if *overheadOnly {
		return
	}

	capacity := float64(*slots) / service.Seconds()
	fmt.Printf("\noverload: backend %d slots x %v = %.0f req/s; offered %.0f req/s for %v per run\n",
		*slots, *service, capacity, capacity**factor, *overloadFor)
	unloaded := run("unloaded", sched.PolicyPriority, *slots, *service, 0.3*capacity, 5*time.Second, [classify.NumPriorities]int{100})
	prio := run("priority", sched.PolicyPriority, *slots, *service, *factor*capacity, *overloadFor, mix)
	fifo := run("fifo", sched.PolicyFIFO, *slots, *service, *factor*capacity, *overloadFor, mix)
	fmt.Println()
	for _, r := range []*result{unloaded, prio, fifo} {
		r.print()
	}
	c := classify.Critical
	fmt.Printf("BENCH critical_p99_ms_unloaded=%.1f\n", unloaded.p(c, 99))
	fmt.Printf("BENCH critical_p99_ms_overload_priority=%.1f\n", prio.p(c, 99))
	fmt.Printf("BENCH critical_p99_ms_overload_fifo=%.1f\n", fifo.p(c, 99))
	fmt.Printf("BENCH critical_rejected_overload_priority=%d\n", prio.rejected[c])
	fmt.Printf("BENCH critical_rejected_overload_fifo=%d\n", fifo.rejected[c])
	fmt.Printf("BENCH high_p99_ms_overload_priority=%.1f\n", prio.p(classify.High, 99))
	fmt.Printf("BENCH overload_goodput_rps_priority=%.0f\n", prio.goodput())
	fmt.Printf("BENCH overload_goodput_rps_fifo=%.0f\n", fifo.goodput())
}

// server starts an ext_proc server over loopback TCP and returns the
// generated client Envoy's protocol is spoken with.
func server(cfg sched.Config) (extprocv3.ExternalProcessorClient, func()) {
	eng := phi.New(phi.Options{Scheduler: sched.New(cfg), Service: "bench"})
	g, _ := extproc.NewGRPCServer(extproc.New(eng, nil))
	client, stop := serveLoopback(g)
	for p, path := range paths {
		if d := eng.Decide(phi.Input{Method: "GET", Path: path}); d.Priority != classify.Priority(p) {
			fail(fmt.Errorf("bench path %s classified %s, want %s", path, d.Priority, classify.Priority(p)))
		}
	}
	return client, stop
}

func headers(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

var respHeaders = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
	ResponseHeaders: &extprocv3.HttpHeaders{Headers: headers(":status", "200")}}}

func reqHeaders(path string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":method", "GET", ":path", path, ":authority", "emr", "accept", "application/json",
			"user-agent", "bench", "x-request-id", "0b7c6a2e-1f3d-4c5b-9a8e-2d4f6b8c0e1a"),
		EndOfStream: true}}}
}

// exchange runs one request: it returns when Envoy would forward the
// request (admitted) or answer it (refused), then backend() runs and the
// response headers release the slot.
func exchange(c extprocv3.ExternalProcessorClient, path string, admittedAt func(time.Time, bool), backend func()) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(reqHeaders(path)); err != nil {
		return err
	}
	r, err := s.Recv()
	if err != nil {
		return err
	}
	refused := r.GetImmediateResponse() != nil
	admittedAt(time.Now(), refused)
	if refused {
		s.CloseSend()
		return nil
	}
	backend()
	if err := s.Send(respHeaders); err != nil {
		return err
	}
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.CloseSend()
}

// sequential sends n requests one after the other (after 500 to warm
// up), as a single client would, and returns the latency percentiles
// until each answer (us).
func sequential(c extprocv3.ExternalProcessorClient, n int) (p50, p99 float64) {
	lat := make([]float64, 0, n)
	for i := range n + 500 {
		start := time.Now()
		err := exchange(c, paths[i%len(paths)], func(at time.Time, _ bool) {
			if i >= 500 {
				lat = append(lat, float64(at.Sub(start).Microseconds()))
			}
		}, func() {})
		if err != nil {
			fail(err)
		}
	}
	slices.Sort(lat)
	return pct(lat, 50), pct(lat, 99)
}

// pace calls fire n times at rate per second, open loop (a slow answer
// never delays the next request), and waits for every call to return.
func pace(rate float64, d time.Duration, fire func(i int)) {
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d.Seconds() * rate)
	var wg sync.WaitGroup
	next := time.Now()
	for i := range n {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() { defer wg.Done(); fire(i) }()
		next = next.Add(interval)
	}
	wg.Wait()
}

// overhead returns latency percentiles and the CPU time per request of
// this process (the extension and the simulated Envoy side together),
// a figure that does not depend on what else the machine runs.
//
// winP99 is the median over 1 s windows of each window's p99: on a
// shared machine one stall of another tenant (tens of ms) delays 1% of
// a whole run's requests and becomes its p99; the per-window median
// shows what a request sees outside such a stall. Both are printed.
func overhead(c extprocv3.ExternalProcessorClient, rate int, d time.Duration) (p50, p99, winP99, cpuPerReq float64) {
	var mu sync.Mutex
	var lat []float64
	windows := map[int64][]float64{}
	var t0 time.Time
	warm := 1 * time.Second
	var measure atomic.Bool
	run := func(dur time.Duration) {
		pace(float64(rate), dur, func(i int) {
			start := time.Now()
			err := exchange(c, paths[i%len(paths)], func(at time.Time, _ bool) {
				if measure.Load() {
					us := float64(at.Sub(start).Microseconds())
					mu.Lock()
					lat = append(lat, us)
					w := int64(start.Sub(t0) / time.Second)
					windows[w] = append(windows[w], us)
					mu.Unlock()
				}
			}, func() {})
			if err != nil {
				fail(err)
			}
		})
	}
	run(warm)
	t0 = time.Now()
	measure.Store(true)
	before := cpuTime()
	run(d)
	used := cpuTime() - before
	slices.Sort(lat)
	var per []float64
	for _, w := range windows {
		slices.Sort(w)
		per = append(per, pct(w, 99))
	}
	slices.Sort(per)
	return pct(lat, 50), pct(lat, 99), pct(per, 50), float64(used.Microseconds()) / float64(max(len(lat), 1))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type result struct {
	name     string
	dur      time.Duration
	lat      [classify.NumPriorities][]float64 // ms, admitted requests
	admit    [classify.NumPriorities][]float64 // ms until admitted or refused
	sent     [classify.NumPriorities]int
	rejected [classify.NumPriorities]int
}

func (r *result) p(p classify.Priority, q float64) float64 { return pct(r.lat[p], q) }

func (r *result) goodput() float64 {
	n := 0
	for _, l := range r.lat {
		n += len(l)
	}
	return float64(n) / r.dur.Seconds()
}

func (r *result) print() {
	fmt.Printf("%-9s %-10s %7s %9s %9s %9s %13s\n", r.name, "priority", "sent", "rejected", "p50_ms", "p99_ms", "admit_p99_ms")
	for p := range classify.NumPriorities {
		if r.sent[p] == 0 {
			continue
		}
		fmt.Printf("%-9s %-10s %7d %8.1f%% %9.1f %9.1f %13.1f\n", "", classify.Priority(p), r.sent[p],
			100*float64(r.rejected[p])/float64(r.sent[p]), r.p(classify.Priority(p), 50), r.p(classify.Priority(p), 99), pct(r.admit[p], 99))
	}
}

// run drives a fresh server and backend at rate for d with the mix.
func run(name string, policy sched.Policy, slots int, service time.Duration, rate float64, d time.Duration, share [classify.NumPriorities]int) *result {
	c, stop := server(sched.Config{Limit: slots, Policy: policy})
	defer stop()
	backend := make(chan struct{}, slots) // the backend's fixed capacity
	res := &result{name: name}
	began := time.Now()
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2)) // same request sequence for every run
	prios := make([]classify.Priority, int(d.Seconds()*rate)+1)
	for i := range prios {
		x := rng.IntN(100)
		for p, s := range share {
			if x < s {
				prios[i] = classify.Priority(p)
				break
			}
			x -= s
		}
	}
	pace(rate, d, func(i int) {
		p := prios[i]
		start := time.Now()
		var refused bool
		var admitted time.Time
		err := exchange(c, paths[p], func(at time.Time, r bool) { admitted, refused = at, r }, func() {
			backend <- struct{}{}
			time.Sleep(service)
			<-backend
		})
		if err != nil {
			fail(err)
		}
		ms := float64(time.Since(start).Microseconds()) / 1000
		mu.Lock()
		res.sent[p]++
		res.admit[p] = append(res.admit[p], float64(admitted.Sub(start).Microseconds())/1000)
		if refused {
			res.rejected[p]++
		} else {
			res.lat[p] = append(res.lat[p], ms)
		}
		mu.Unlock()
	})
	res.dur = time.Since(began) // includes draining the queues
	for p := range res.lat {
		slices.Sort(res.lat[p])
		slices.Sort(res.admit[p])
	}
	fmt.Printf("%s run done\n", name)
	return res
}

// pct is the q-th percentile of sorted values (nearest rank).
func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q/100*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/extproc:", err)
	os.Exit(1)
}
