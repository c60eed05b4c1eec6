package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"medmesh/api/admin"
	"medmesh/api/wire"
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminAddr := fs.String("admin", wire.DefaultAdminAddress, "control plane admin address (host:port, or an http:// or https:// URL)")
	var creds adminClientFlags
	creds.register(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON (the same as -o json)")
	output := fs.String("o", "table", "output: table, or json (the raw /debug/proxies JSON)")
	watch := fs.Bool("watch", false, "print again every --interval until interrupted (Ctrl-C)")
	interval := fs.Duration("interval", 2*time.Second, "with --watch: time between two prints")
	count := fs.Int("count", 0, "with --watch: stop after this many prints (0: until interrupted)")
	scope := fs.String("scope", "", "print which services SERVICE's proxies are sent and why each service is in or out (configuration is scoped by authorization), then exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *output != "table" && *output != "json":
		fmt.Fprintf(stderr, "medmesh status: -o %q: want table or json\n", *output)
		return 2
	case *watch && *interval <= 0:
		fmt.Fprintln(stderr, "medmesh status: --interval must be positive")
		return 2
	}
	c, url, err := creds.client(*adminAddr, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh status: %v\n", err)
		return 2
	}
	s := statusCall{c: c, url: url, addr: *adminAddr, json: *asJSON || *output == "json"}
	if *scope != "" {
		return s.printScope(stdout, stderr, *scope)
	}
	if !*watch {
		return s.print(stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return s.watch(ctx, stdout, stderr, *interval, *count)
}

// statusCall is one control plane's status, as `medmesh status` prints it.
type statusCall struct {
	c         *http.Client
	url, addr string
	json      bool
}

// watch prints the status every interval until ctx ends (or count prints
// are done), clearing a terminal first. A failed print does not stop it:
// a watch is for seeing a control plane come back, too.
func (s statusCall) watch(ctx context.Context, stdout, stderr io.Writer, interval time.Duration, count int) int {
	clear := isTerminal(stdout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 1; ; n++ {
		if clear {
			io.WriteString(stdout, "\033[H\033[2J")
		}
		fmt.Fprintf(stdout, "Every %s: medmesh status --admin %s    %s\n\n", interval, s.addr, time.Now().Format(time.RFC3339))
		s.print(stdout, stderr)
		if count > 0 && n >= count {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// print prints the status once; 0 on success, 1 if the control plane
// could not be read.
func (s statusCall) print(stdout, stderr io.Writer) int {
	var pr admin.ProxiesResponse
	if done, code := s.get(stdout, stderr, "/debug/proxies", &pr); done {
		return code
	}
	PrintStatus(stdout, &pr)
	if pr.Site != "" {
		if rr, err := fetchResidency(s.c, s.url); err != nil {
			fmt.Fprintf(stderr, "medmesh status: residency: %v\n", err)
		} else {
			PrintResidency(stdout, rr)
		}
	}
	if pol, err := fetchPolicies(s.c, s.url); err != nil {
		fmt.Fprintf(stderr, "medmesh status: policies: %v\n", err)
	} else {
		PrintPolicies(stdout, pol)
	}
	return 0
}

// PrintStatus renders the status table.
func PrintStatus(w io.Writer, pr *admin.ProxiesResponse) {
	src := "synced"
	if !pr.Source.Synced {
		src = "not synced"
	}
	if pr.Source.LastError != "" {
		src += "; last error: " + pr.Source.LastError
	}
	fmt.Fprintf(w, "ready=%t services=%d serving=%s registry: %s\n", pr.Ready, pr.Services, orDash(pr.Serving), src)
	printPeers(w, pr.Source.Peers)
	if pr.Error != "" {
		fmt.Fprintf(w, "publish error: %s\n", pr.Error)
	}
	for _, warn := range pr.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	if pr.MTLS {
		fmt.Fprintln(w, "mTLS: on (every hop; PHI services deny callers no intention allows)")
	} else {
		fmt.Fprintln(w, "mTLS: OFF (plaintext, development only: the control plane runs with --mtls=false; drop it and give --state-dir or --ca-cert/--ca-key)")
	}
	if len(pr.Permissive) > 0 {
		fmt.Fprintf(w, "permissive (plaintext accepted beside mTLS): %s\n", strings.Join(pr.Permissive, ", "))
	}
	for _, u := range pr.UnresolvedIntentions {
		fmt.Fprintf(w, "unresolved intention: %s\n", u)
	}
	for _, p := range pr.Proxies {
		for _, problem := range p.Problems {
			fmt.Fprintf(w, "problem: %s\n", problem)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSERVICE\tKIND\tSCOPE\tIDENTITY\tXDS\tLDS\tRDS\tCDS\tEDS\tTRACE\tLAST NACK")
	for _, p := range pr.Proxies {
		nack := "-"
		if p.LastNACK != nil {
			nack = fmt.Sprintf("%s %s: %s", shortType(p.LastNACK.TypeURL), short(p.LastNACK.Version), oneLine(p.LastNACK.Message, 80))
		}
		// The trace column is the trace ID's first 8 hex digits, enough to
		// find it in a backend's search; /debug/proxies has it whole.
		// SCOPE: services sent of the mesh's (configuration follows
		// authorization; --scope SERVICE says which and why).
		scope := "-"
		if p.Scope != nil {
			scope = fmt.Sprintf("%d/%d", *p.Scope, pr.Services)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, orDash(p.Service), p.Kind, scope, identity(p.Identity), p.Transport,
			acked(p, "LDS"), acked(p, "RDS"), acked(p, "CDS"), acked(p, "EDS"), short(orDash(p.TraceID)), nack)
	}
	tw.Flush()
}

// identity shortens a proxy's identity for the table: the SPIFFE ID's
// path, or why it has none (the full reason is in /debug/proxies).
func identity(s string) string {
	if _, path, ok := strings.Cut(strings.TrimPrefix(s, "spiffe://"), "/"); ok && strings.HasPrefix(s, "spiffe://") {
		return path
	}
	return oneLine(orDash(s), 40)
}

// acked shows the ACKed version, marked with * while a newer one is in
// flight.
func acked(p admin.Proxy, typ string) string {
	ts, ok := p.Types[typ]
	if !ok || (ts.Acked == "" && ts.Sent == "") {
		return "-"
	}
	if !ts.InSync() {
		return short(ts.Acked) + "*"
	}
	return short(ts.Acked)
}

func short(v string) string {
	if len(v) > 8 {
		return v[len(v)-8:]
	}
	if v == "" {
		return "-"
	}
	return v
}

func shortType(t string) string {
	i := strings.LastIndex(t, ".")
	return t[i+1:]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// printPeers lists the other sites this one is peered with: whether each
// is heard from and what it exports here.
func printPeers(w io.Writer, peers []admin.Peer) {
	for _, p := range peers {
		state := p.State
		switch {
		case p.Withdrawn:
			state += fmt.Sprintf(", stale since %s: imports withdrawn", p.StaleSince.UTC().Format(time.RFC3339))
		case !p.StaleSince.IsZero():
			state += fmt.Sprintf(", stale since %s: imports served as last heard of", p.StaleSince.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(w, "peer %s (site %s): %s; imports %d instances of %s\n", p.Name, p.Site, state, p.Instances,
			orDash(strings.Join(p.Imported, ", ")))
	}
}

// get reads one admin path into v. done is true when the caller has
// nothing left to do: the control plane could not be read (code 1), or
// with -o json the body was printed as it came (code 0).
func (s statusCall) get(stdout, stderr io.Writer, path string, v any) (done bool, code int) {
	resp, err := s.c.Get(s.url + path)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh status: cannot reach the control plane at %s: %v\n", s.addr, err)
		return true, 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "medmesh status: %s: %s\n", resp.Status, body)
		return true, 1
	}
	if s.json {
		stdout.Write(body)
		return true, 0
	}
	if err := json.Unmarshal(body, v); err != nil {
		fmt.Fprintf(stderr, "medmesh status: bad response: %v\n", err)
		return true, 1
	}
	return false, 0
}
