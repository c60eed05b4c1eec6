package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/api/admin"
	"medmesh/internal/consulagent"
	"medmesh/internal/uplink"
)

// The demo's network is three sites, each the way medmesh runs one: its
// own Consul datacenter (a server with cluster peering enabled) and its
// own control plane (`medmesh controlplane --site NAME`). The sites see
// each other only through Consul cluster peering; medmesh replicates
// nothing itself. The hub's control plane keeps the hospital root CA;
// each edge site signs its workloads' SVIDs with its own intermediate,
// made at start with `medmesh ca intermediate`, so it needs no uplink to
// issue or renew identities.
//
// Every peering runs through an uplink.Link, a TCP forwarder on loopback
// the demo can cut: cutting an edge site's links is that site losing its
// uplink (the Consul peering streams drop and cannot be re-established).
// On one machine the services' own calls do not cross these links, so
// the story makes no call cross to the cut site while it is cut.

// site is one site of the network.
type site struct {
	name  string
	about string
	// exports are the services this site lets its peers import
	// (Consul exported-services); nil: every service it runs.
	exports   []string
	instances []*instance

	consul             *consulagent.Agent
	turnSecret         string // the file the site's relay and signalling share
	cp                 *proc
	stateDir, caDir    string
	xdsAddr, adminAddr string
}

// newNetwork is the demo's telemedicine network. The hub is the hospital
// (EMR, imaging, HIS and a drug formulary); each edge site is a clinic
// with its own front desk (HIS) and imaging, and its realtime vitals
// (a bedside monitor, two vitals instances, a nurse station), which stay
// on the site: they are not exported. Only the formulary is not PHI, so
// it is the one service whose calls may cross sites: north runs its own
// copy (for north only: it does not export it), south has none and uses
// the others'.
func newNetwork() []*site {
	return []*site{
		{name: "hub", about: "the hospital", instances: []*instance{
			{id: "imaging-1", service: "imaging", calls: []string{"emr"}},
			{id: "imaging-2", service: "imaging", calls: []string{"emr"}},
			{id: "emr-1", service: "emr", calls: []string{"imaging"}},
			{id: "emr-2", service: "emr", calls: []string{"imaging"}},
			{id: "his-1", service: "his", calls: []string{"emr", "imaging"}},
			{id: "formulary-1", service: "formulary"},
		}},
		{name: "north", about: "an edge clinic", exports: []string{"his", "imaging"}, instances: slices.Concat([]*instance{
			{id: "imaging-north", service: "imaging"},
			{id: "his-north", service: "his", calls: []string{"imaging", "formulary"}},
			{id: "formulary-north", service: "formulary"},
		}, realtimeWorkloads("north"), telehealthWorkloads("north"))},
		{name: "south", about: "an edge clinic", exports: []string{"his", "imaging"}, instances: append([]*instance{
			{id: "imaging-south", service: "imaging"},
			{id: "his-south", service: "his", calls: []string{"imaging", "formulary"}},
		}, realtimeWorkloads("south")...)},
	}
}

// allowed are the Consul intentions of each site: destination ->
// callers. EMR, imaging and HIS are PHI services, so medmesh denies every
// caller not listed; the formulary is not PHI and allows any caller.
var allowed = map[string]map[string][]string{
	"hub": {
		"emr":     {"his", "imaging"},
		"imaging": {"emr", "his"},
	},
	"north": {"imaging": {"his"}, "vitals": realtimeIntentions["vitals"], "nurse-station": realtimeIntentions["nurse-station"],
		"telehealth-signal": telehealthIntentions},
	"south": {"imaging": {"his"}, "vitals": realtimeIntentions["vitals"], "nurse-station": realtimeIntentions["nurse-station"]},
}

// exampleServices are the Consul service names the demo registers.
var exampleServices = map[string]bool{"emr": true, "his": true, "imaging": true, "formulary": true, "vitals": true, "nurse-station": true,
	"telehealth-signal": true, "turn": true}

func (s *site) hub() bool { return s.name == "hub" }

// writeTurnSecret makes the secret the site's TURN relay and signalling
// service share (short-lived TURN credentials are derived from it).
func (s *site) writeTurnSecret() error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	s.turnSecret = filepath.Join(filepath.Dir(s.consul.DataDir), "turn-secret")
	return os.WriteFile(s.turnSecret, []byte(hex.EncodeToString(b)), 0o600)
}

// exported lists the services s lets its peers import.
func (s *site) exported() []string {
	if s.exports != nil {
		return s.exports
	}
	seen := map[string]bool{}
	var out []string
	for _, in := range s.instances {
		if !seen[in.service] {
			seen[in.service] = true
			out = append(out, in.service)
		}
	}
	sort.Strings(out)
	return out
}

// link is one peering between two sites and the uplink it runs over.
type link struct {
	acceptor, dialer *site
	up               *uplink.Link
}

func (l *link) touches(s *site) bool { return l.acceptor == s || l.dialer == s }

// startConsuls starts every site's Consul server (in parallel: each takes
// a few seconds to elect itself) with certificates for peering.
func (d *demo) startConsuls(ctx context.Context) error {
	caDir := filepath.Join(d.runDir, "consul-ca")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		return err
	}
	ca, err := consulagent.NewPeeringCA(caDir)
	if errors.Is(err, consulagent.ErrNoBinary) {
		return fmt.Errorf("%w (`make demo` runs `make tools` first)", err)
	}
	if err != nil {
		return err
	}
	errs := make([]error, len(d.sites))
	var wg sync.WaitGroup
	for i, s := range d.sites {
		dir := filepath.Join(d.runDir, s.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		// A dev server: state in memory, as the demo's whole run is.
		if s.consul, err = consulagent.NewSite(dir, s.name, ca, true); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.consul.Start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range d.sites {
		d.out.printf("site %-5s Consul datacenter %q up: HTTP API and UI http://%s, peering (gRPC TLS) %s",
			s.name, s.name, s.consul.Addr(), s.consul.PeeringAddr())
	}
	return nil
}

// peerSites peers every pair of sites through an uplink, exports each
// site's services to the others and writes each site's intentions.
func (d *demo) peerSites(ctx context.Context) error {
	for i, a := range d.sites {
		for _, b := range d.sites[i+1:] {
			up, err := uplink.New(a.consul.PeeringAddr())
			if err != nil {
				return err
			}
			d.links = append(d.links, &link{acceptor: a, dialer: b, up: up})
		}
	}
	// In parallel: a server that has just elected itself takes a few
	// seconds to set up the Connect CA peering needs.
	errs := make([]error, len(d.links))
	var wg sync.WaitGroup
	for i, l := range d.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each side names the peering after the other site.
			errs[i] = consulagent.PeerVia(ctx, l.acceptor.consul, l.acceptor.name, l.dialer.consul, l.dialer.name, l.up.Addr())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, l := range d.links {
		d.out.printf("peered %s and %s (Consul cluster peering: %s generated the token, %s dialed it through uplink %s)",
			l.acceptor.name, l.dialer.name, l.acceptor.name, l.dialer.name, l.up.Addr())
	}
	for _, s := range d.sites {
		exports := map[string][]string{}
		for _, svc := range s.exported() {
			for _, p := range d.sites {
				if p != s {
					exports[svc] = append(exports[svc], p.name)
				}
			}
		}
		if err := consulagent.Export(ctx, s.consul, exports); err != nil {
			return err
		}
		if err := writeIntentions(s.consul.Client(), allowed[s.name]); err != nil {
			return err
		}
		d.out.printf("site %-5s exports %s to its peers; intentions: %s", s.name, strings.Join(s.exported(), ", "), intentionsSummary(allowed[s.name]))
	}
	return nil
}

// writeIntentions writes one service-intentions config entry per
// destination. It runs before the control plane starts: the Consul source
// reads every intention before its first catalog, so no instance ever
// serves with an RBAC policy that lacks them.
func writeIntentions(c *api.Client, allow map[string][]string) error {
	for dst, srcs := range allow {
		e := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: dst}
		for _, src := range srcs {
			e.Sources = append(e.Sources, &api.SourceIntention{Name: src, Action: api.IntentionActionAllow})
		}
		if _, _, err := c.ConfigEntries().Set(e, nil); err != nil {
			return fmt.Errorf("writing the service-intentions config entry for %s: %w", dst, err)
		}
	}
	return nil
}

func intentionsSummary(allow map[string][]string) string {
	dsts := make([]string, 0, len(allow))
	for d := range allow {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	parts := make([]string, 0, len(dsts))
	for _, d := range dsts {
		parts = append(parts, strings.Join(allow[d], ", ")+" -> "+d)
	}
	return strings.Join(parts, "; ") + " allowed"
}

// startControlPlanes starts the hub's control plane, which creates the
// hospital root CA in its state directory, makes each edge site's
// intermediate CA from that root with `medmesh ca intermediate`, and
// starts the edge sites' control planes with theirs.
func (d *demo) startControlPlanes(ctx context.Context) error {
	var err error
	for _, s := range d.sites {
		s.stateDir = filepath.Join(d.runDir, s.name, "controlplane")
		want := "127.0.0.1:0"
		if s.hub() {
			want = d.cfg.xdsListen
		}
		if s.xdsAddr, err = pickAddr(want, d.out); err != nil {
			return err
		}
		if s.hub() {
			want = d.cfg.adminListen
		}
		if s.adminAddr, err = pickAddr(want, d.out); err != nil {
			return err
		}
	}
	hub := d.sites[0]
	if err := d.startControlPlane(ctx, hub); err != nil {
		return err
	}
	root := filepath.Join(hub.stateDir, "ca")
	for _, s := range d.sites[1:] {
		s.caDir = filepath.Join(d.runDir, s.name, "ca")
		args := []string{"ca", "intermediate", "--site", s.name, "--root-cert", filepath.Join(root, "root.pem"),
			"--root-key", filepath.Join(root, "root-key.pem"), "--ttl", "24h", "--out-dir", s.caDir}
		if out, err := exec.CommandContext(ctx, d.cfg.medmesh, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("medmesh %s: %v: %s", strings.Join(args, " "), err, out)
		}
		d.out.printf("site %-5s intermediate CA made from the hub's root: medmesh ca intermediate --site %s --ttl 24h --out-dir %s", s.name, s.name, s.caDir)
	}
	errs := make([]error, len(d.sites))
	var wg sync.WaitGroup
	for i, s := range d.sites[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.startControlPlane(ctx, s)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startControlPlane starts one site's control plane and waits until it is
// ready. The hub keeps a self-signed root in its state directory (the
// hospital root); the others sign with their intermediate.
func (d *demo) startControlPlane(ctx context.Context, s *site) error {
	args := []string{"controlplane", "--site", s.name,
		"--consul", "http://" + s.consul.Addr(), "--xds-listen", s.xdsAddr, "--admin-listen", s.adminAddr,
		"--state-dir", s.stateDir, "--log-format", "json",
		// The demo's own calls (join tokens for its sidecars, /debug reads)
		// and the reader's browser and `medmesh status` come from loopback
		// without credentials: --dev admits them (README "Who may read and
		// who may act" shows the credentialed way). The sidecars still
		// prove their identity with join tokens.
		"--dev"}
	if d.jaeger != nil {
		// The status page (/ui) opens change and request traces from it.
		args = append(args, "--trace-query-url", d.jaeger.QueryURL())
	}
	ca := "hospital root CA kept in " + filepath.Join(s.stateDir, "ca")
	if s.caDir != "" {
		args = append(args, "--ca-cert", filepath.Join(s.caDir, "intermediate.pem"),
			"--ca-key", filepath.Join(s.caDir, "intermediate-key.pem"), "--ca-bundle", filepath.Join(s.caDir, "bundle.pem"))
		ca = "signs with its intermediate from " + s.caDir
	}
	var err error
	if s.cp, err = d.sup.start("controlplane-"+s.name, d.cfg.medmesh, args...); err != nil {
		return err
	}
	d.out.printf("site %-5s started controlplane --site %s pid=%d  xDS %s  admin http://%s  mTLS on, %s",
		s.name, s.name, s.cp.pid(), s.xdsAddr, s.adminAddr, ca)
	err = d.poll(ctx, 30*time.Second, s.name+"'s control plane to be ready", func() []*proc { return []*proc{s.cp} },
		func(ctx context.Context) error { _, err := s.adminGet(ctx, "/readyz"); return err })
	if err == nil {
		d.out.printf("site %-5s control plane is ready (it has the site's Consul catalog, intentions and peerings)", s.name)
	}
	return err
}

func (s *site) adminGet(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", s.name, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (s *site) proxies(ctx context.Context) (*admin.ProxiesResponse, error) {
	body, err := s.adminGet(ctx, "/debug/proxies")
	if err != nil {
		return nil, err
	}
	var pr admin.ProxiesResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, fmt.Errorf("%s /debug/proxies: %w", s.name, err)
	}
	return &pr, nil
}

// peersState is one line on a site's peerings, as its control plane
// reports them: state, since when stale, imported instances served.
func (s *site) peersState(ctx context.Context) string {
	pr, err := s.proxies(ctx)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	parts := make([]string, 0, len(pr.Source.Peers))
	for _, p := range pr.Source.Peers {
		st := p.State
		if !p.StaleSince.IsZero() {
			st += fmt.Sprintf(", stale for %.0fs", time.Since(p.StaleSince).Seconds())
		}
		parts = append(parts, fmt.Sprintf("%s %s (%d imported instances served)", p.Name, st, p.Instances))
	}
	if len(parts) == 0 {
		return "no peers"
	}
	return strings.Join(parts, "; ")
}

// peersAre polls until every peering of s is in state want, as its
// control plane sees it.
func (d *demo) peersAre(ctx context.Context, s *site, want string) error {
	watch := func() []*proc { return []*proc{s.cp} }
	return d.poll(ctx, 90*time.Second, fmt.Sprintf("%s's peerings to be %s", s.name, want), watch, func(ctx context.Context) error {
		pr, err := s.proxies(ctx)
		if err != nil {
			return err
		}
		if len(pr.Source.Peers) == 0 {
			return errors.New("no peers yet")
		}
		for _, p := range pr.Source.Peers {
			if p.State != want {
				return fmt.Errorf("peer %s is %s", p.Name, p.State)
			}
		}
		return nil
	})
}

// responsesSent is the xDS responses a site's control plane has sent, of
// every type (its medmesh_xds_responses_total).
func (s *site) responsesSent(ctx context.Context) (int, error) {
	body, err := s.adminGet(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "medmesh_xds_responses_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s /metrics: %q: %w", s.name, line, err)
		}
		total += int(v)
	}
	return total, nil
}

func (d *demo) site(name string) *site {
	for _, s := range d.sites {
		if s.name == name {
			return s
		}
	}
	panic("demo: no site " + name) // the story names only known sites
}

// cutUplink cuts every peering of s: the site is on its own.
func (d *demo) cutUplink(s *site) {
	for _, l := range d.links {
		if l.touches(s) {
			l.up.Cut()
		}
	}
}

func (d *demo) restoreUplink(s *site) error {
	var errs []error
	for _, l := range d.links {
		if l.touches(s) {
			errs = append(errs, l.up.Restore())
		}
	}
	return errors.Join(errs...)
}

// siteLine sums up a site's control plane: readiness, its proxies and
// how many hold the latest config, and its residency decisions.
func siteLine(ctx context.Context, s *site) string {
	pr, err := s.proxies(ctx)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	inSync := 0
	for _, p := range pr.Proxies {
		ok := true
		for _, ts := range p.Types {
			ok = ok && ts.InSync()
		}
		if ok {
			inSync++
		}
	}
	line := fmt.Sprintf("ready=%t serving=%s, %d proxies connected (%d in sync), %d services",
		pr.Ready, pr.Serving, len(pr.Proxies), inSync, pr.Services)
	body, err := s.adminGet(ctx, "/debug/residency")
	if err != nil {
		return line + "; residency: (" + err.Error() + ")"
	}
	var rr admin.ResidencyResponse
	if err := json.Unmarshal(body, &rr); err != nil {
		return line + "; residency: (" + err.Error() + ")"
	}
	var routed, held []string
	for _, dec := range rr.Decisions {
		if dec.Routed {
			routed = append(routed, dec.Service+"@"+dec.Site)
		} else {
			held = append(held, dec.Service+"@"+dec.Site)
		}
	}
	return fmt.Sprintf("%s; from other sites routed here: %s; held back by residency: %s",
		line, orNone(routed), orNone(held))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// cut cuts s's uplink, then, in the background, waits until s sees its
// peers as no longer active and shows s's status. The xDS responses s's
// control plane sends from now until the peerings are back are counted
// by restore.
func (d *demo) cut(ctx context.Context, s *site) error {
	before, err := s.responsesSent(ctx)
	if err != nil {
		return err
	}
	d.cutAt = before
	d.cutUplink(s)
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		start := time.Now()
		if err := d.peersAre(ctx, s, "FAILING"); err != nil {
			if ctx.Err() == nil {
				d.out.printf("!! %v", err)
			}
			return
		}
		d.out.block(fmt.Sprintf("%7s  %s noticed it is cut off after %.1fs. Its imports are kept, marked stale (never read as deleted); its own services go on:\n"+
			"  $ medmesh status --admin %s\n%s", d.out.elapsed(), s.name, time.Since(start).Seconds(), s.adminAddr, statusTable(ctx, d.cfg.medmesh, s.adminAddr)))
	}()
	return nil
}

// restore restores s's uplink and, in the background, waits for its
// peerings to be active again, lets a few seconds pass and reports the xDS
// responses s's control plane sent since the cut: zero when nothing
// changed for its proxies (content-hash versions).
func (d *demo) restore(ctx context.Context, s *site) error {
	if err := d.restoreUplink(s); err != nil {
		return err
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		start := time.Now()
		if err := d.peersAre(ctx, s, "ACTIVE"); err != nil {
			if ctx.Err() == nil {
				d.out.printf("!! %v", err)
			}
			return
		}
		took := time.Since(start)
		// Anything the reconnection would push is sent within moments of
		// the import being read again; this is an observation window, not
		// a synchronisation.
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
		after, err := s.responsesSent(ctx)
		if err != nil {
			if ctx.Err() == nil {
				d.out.printf("!! %v", err)
			}
			return
		}
		n := after - d.cutAt
		d.cutPushes.Store(int32(n))
		d.out.printf("==> %s's peerings are ACTIVE again %.1fs after the link came back (Consul redials with backoff). "+
			"xDS responses %s's control plane sent from the cut until 3s after that: %d (medmesh_xds_responses_total).",
			s.name, took.Seconds(), s.name, n)
	}()
	return nil
}
