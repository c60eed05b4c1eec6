package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// console serialises the demo's output; every line carries the time since
// the demo started, so the story and its effects line up.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "%7s  %s\n", c.elapsed(), fmt.Sprintf(format, args...))
}

// block prints several lines at once, without interleaving.
func (c *console) block(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	io.WriteString(c.w, s)
}

func (c *console) elapsed() string {
	return fmt.Sprintf("+%.1fs", time.Since(c.start).Seconds())
}

// logLine is the part of a child's JSON log line the demo reads.
type logLine struct {
	Level     string         `json:"level"`
	Msg       string         `json:"msg"`
	Instance  string         `json:"instance"`
	Target    string         `json:"target"`
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	ServedBy  map[string]int `json:"served_by"`
	LastError string         `json:"last_error"`
	// Callers is a server's "served" line: calls per caller SPIFFE ID.
	Callers map[string]int `json:"callers"`
	// Code, Err, ServerID and AnsweredBy are the probe's outcome.
	Code       string `json:"code"`
	Err        string `json:"err"`
	ServerID   string `json:"server_id"`
	AnsweredBy string `json:"answered_by"`
}

// echoed are the service log messages worth showing on the console; the
// rest stays in the per-process log files.
var echoed = map[string]bool{
	"serving":                                 true,
	"health check now passing":                true,
	"health check now critical":               true,
	"stopping: leaving Consul, then draining": true,
	"deregistered from Consul":                true,
	"stopped":                                 true,
}

// describe renders a JSON log line as "msg k=v ...", leaving out what the
// console already shows (time, level, instance).
func describe(raw []byte) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case "time", "level", "msg", "instance":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprint(&b, m["msg"])
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, m[k])
	}
	return b.String()
}

// counts are the calls from one caller to one service.
type counts struct {
	ok, failed int
	by         map[string]int
	lastErr    string
}

func (c *counts) add(l *logLine) {
	c.ok += l.OK
	c.failed += l.Failed
	if c.by == nil {
		c.by = map[string]int{}
	}
	for id, n := range l.ServedBy {
		c.by[id] += n
	}
	if l.LastError != "" {
		c.lastErr = l.LastError
	}
}

func (c *counts) answeredBy() string {
	ids := make([]string, 0, len(c.by))
	for id := range c.by {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s %d", id, c.by[id]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

type route struct{ caller, target string }

// traffic sums the services' per-second call summaries: per caller and
// target since the last table, and per target service for the whole run.
type traffic struct {
	mu     sync.Mutex
	window map[route]*counts
	total  map[string]*counts
	// seen and seenTotal: calls per server instance and caller SPIFFE ID,
	// as the servers report them, since the last table and overall.
	seen, seenTotal map[string]map[string]int
}

func newTraffic() *traffic {
	return &traffic{window: map[route]*counts{}, total: map[string]*counts{},
		seen: map[string]map[string]int{}, seenTotal: map[string]map[string]int{}}
}

// addServed counts a server's "served" line.
func (t *traffic) addServed(l *logLine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range []map[string]map[string]int{t.seen, t.seenTotal} {
		if m[l.Instance] == nil {
			m[l.Instance] = map[string]int{}
		}
		for id, n := range l.Callers {
			m[l.Instance][id] += n
		}
	}
}

// seenTable renders calls per server and caller identity.
func seenTable(seen map[string]map[string]int) string {
	servers := make([]string, 0, len(seen))
	for s := range seen {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	var b strings.Builder
	for _, s := range servers {
		c := counts{by: seen[s]}
		fmt.Fprintf(&b, "    %-15s <- %s\n", s, c.answeredBy())
	}
	return b.String()
}

func (t *traffic) seenTotals() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return seenTable(t.seenTotal)
}

func (t *traffic) add(l *logLine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := route{l.Instance, l.Target}
	if t.window[r] == nil {
		t.window[r] = &counts{}
	}
	t.window[r].add(l)
	if t.total[l.Target] == nil {
		t.total[l.Target] = &counts{}
	}
	t.total[l.Target].add(l)
}

// resetWindow forgets the calls since the last table (not the totals).
func (t *traffic) resetWindow() {
	t.mu.Lock()
	t.window = map[route]*counts{}
	t.seen = map[string]map[string]int{}
	t.mu.Unlock()
}

// windowTable renders and resets the calls since the last table, as the
// callers and as the servers saw them.
func (t *traffic) windowTable() string {
	t.mu.Lock()
	w, seen := t.window, t.seen
	t.window, t.seen = map[route]*counts{}, map[string]map[string]int{}
	t.mu.Unlock()
	routes := make([]route, 0, len(w))
	for r := range w {
		routes = append(routes, r)
	}
	sort.Slice(routes, func(i, j int) bool {
		if routes[i].caller != routes[j].caller {
			return routes[i].caller < routes[j].caller
		}
		return routes[i].target < routes[j].target
	})
	var b strings.Builder
	if len(routes) == 0 {
		b.WriteString("    (no calls reported yet)\n")
	}
	for _, r := range routes {
		c := w[r]
		fmt.Fprintf(&b, "    %-15s -> %-9s ok %4d  failed %3d   answered by: %s\n", r.caller, r.target, c.ok, c.failed, c.answeredBy())
		if c.failed > 0 && c.lastErr != "" {
			fmt.Fprintf(&b, "    %-15s    last error: %s\n", "", c.lastErr)
		}
	}
	if len(seen) > 0 {
		b.WriteString("  Callers the servers saw (SPIFFE ID from the verified client certificate):\n")
		b.WriteString(seenTable(seen))
	}
	return b.String()
}

// totals returns the calls of the whole run.
func (t *traffic) totals() (ok, failed int, table string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	targets := make([]string, 0, len(t.total))
	for s := range t.total {
		targets = append(targets, s)
	}
	sort.Strings(targets)
	var b strings.Builder
	for _, s := range targets {
		c := t.total[s]
		ok += c.ok
		failed += c.failed
		fmt.Fprintf(&b, "    %-9s ok %5d  failed %4d   answered by: %s\n", s, c.ok, c.failed, c.answeredBy())
	}
	return ok, failed, b.String()
}

// statusTable runs `medmesh status`, exactly what an operator would type.
func statusTable(ctx context.Context, medmesh, admin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, medmesh, "status", "--admin", admin)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return "    (medmesh status failed: " + err.Error() + ")\n"
	}
	return indent(out.String(), "    ")
}

// consulHealth lists the example instances registered in Consul with the
// state of their checks, as the registry (not the mesh) sees them.
func consulHealth(c *api.Client) string {
	checks, _, err := c.Health().State(api.HealthAny, nil)
	if err != nil {
		return "(cannot ask Consul: " + err.Error() + ")"
	}
	state := map[string]string{}
	for _, ch := range checks {
		if ch.ServiceID == "" || !exampleServices[ch.ServiceName] {
			continue
		}
		state[ch.ServiceID] = ch.Status
	}
	ids := make([]string, 0, len(state))
	for id := range state {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		s := state[id]
		if s != api.HealthPassing {
			s = strings.ToUpper(s)
		}
		parts = append(parts, id+" "+s)
	}
	if len(parts) == 0 {
		return "(no example instances registered)"
	}
	return strings.Join(parts, ", ")
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix) + "\n"
}
