package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/api/admin"
)

// allowed are the Consul intentions the story needs: destination ->
// callers. EMR, imaging and HIS are PHI services, so medmesh denies every
// caller not listed here.
var allowed = map[string][]string{
	"emr":     {"his", "imaging"},
	"imaging": {"emr", "his"},
}

// deniedCaller is the service of the one-shot caller the story sends to
// EMR: it proves its identity like every workload, but no intention lets
// billing read the EMR, so the call must be refused.
const (
	deniedCaller = "billing"
	deniedTarget = "emr"
)

// writeIntentions writes one service-intentions config entry per
// destination. It runs before the control plane starts: the Consul source
// reads every intention before its first catalog, so no instance ever
// serves with an RBAC policy that lacks them.
func writeIntentions(c *api.Client) error {
	for dst, srcs := range allowed {
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

func intentionsSummary() string {
	dsts := make([]string, 0, len(allowed))
	for d := range allowed {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	parts := make([]string, 0, len(dsts))
	for _, d := range dsts {
		parts = append(parts, strings.Join(allowed[d], ", ")+" -> "+d)
	}
	return strings.Join(parts, "; ") + " allowed; every other caller of these PHI services is denied"
}

// joinToken asks the control plane's admin API for a one-time join token
// for service: the proof of identity its sidecar presents.
func (d *demo) joinToken(ctx context.Context, service string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u := "http://" + d.adminAddr + "/join-tokens?service=" + url.QueryEscape(service)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("join token for %s: %w", service, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("join token for %s: %w", service, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("join token for %s: %s: %s", service, resp.Status, strings.TrimSpace(string(body)))
	}
	var tok admin.JoinTokenResponse
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		return "", fmt.Errorf("join token for %s: no token in the answer (%v)", service, err)
	}
	return tok.Token, nil
}

// sidecarNode is the xDS node ID of an instance's SVID agent.
func sidecarNode(id string) string { return id + "/svid" }

// startSidecar starts `medmesh sidecar --svid-dir` for one workload with
// a fresh join token. It keeps the workload's SVID and bundle files fresh
// for as long as it runs, across restarts of the workload itself.
func (d *demo) startSidecar(ctx context.Context, id, service, dir string) (*proc, error) {
	tok, err := d.joinToken(ctx, service)
	if err != nil {
		return nil, err
	}
	p, err := d.sup.startSpec(procSpec{
		name: id + ".svid", bin: d.cfg.medmesh,
		// No ext_proc extension: it serves Envoy, and the demo's
		// services are proxyless gRPC; the sidecar is their SVID agent.
		args: []string{"sidecar", "--svid-dir", dir, "--node-id", sidecarNode(id), "--service", service,
			"--xds-address", d.xdsAddr, "--extproc-listen=", "--log-format", "json"},
		// `medmesh sidecar` reads --join-token's default from here.
		env: []string{"MEDMESH_JOIN_TOKEN=" + tok},
	})
	if err != nil {
		return nil, err
	}
	d.out.printf("started %-14s pid=%d  medmesh sidecar --svid-dir %s --node-id %s --service %s (one-time join token in $MEDMESH_JOIN_TOKEN)",
		p.name, p.pid(), dir, sidecarNode(id), service)
	return p, nil
}

// svidFiles are the files `medmesh sidecar --svid-dir` writes and the
// proxyless bootstrap's certificate provider reads.
var svidFiles = []string{"svid.pem", "svid_key.pem", "bundle.pem"}

// identityOf reports the SPIFFE ID an instance's sidecar has written,
// once the control plane has attested the sidecar and the SVID in the
// files verifies against the bundle beside it.
func (d *demo) identityOf(ctx context.Context, id, dir string) (string, error) {
	identities, err := d.proxyIdentities(ctx)
	if err != nil {
		return "", err
	}
	got := identities[sidecarNode(id)]
	if !strings.HasPrefix(got, "spiffe://") {
		if got == "" {
			got = "not connected yet"
		}
		return "", fmt.Errorf("%s: identity %q", sidecarNode(id), got)
	}
	for _, f := range svidFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return "", fmt.Errorf("%s: %w", id, err)
		}
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"))
	if err != nil {
		return "", fmt.Errorf("%s: %w", id, err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return "", fmt.Errorf("%s: %w", id, err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		return "", fmt.Errorf("%s: the SVID in %s does not verify against its bundle: %w", id, dir, err)
	}
	if svid.ID.String() != got {
		return "", fmt.Errorf("%s: the files hold %s, the control plane issued %s", id, svid.ID, got)
	}
	return got, nil
}

// proxyIdentities maps each connected proxy to the identity the control
// plane gave it (a SPIFFE ID, or why it has none).
func (d *demo) proxyIdentities(ctx context.Context) (map[string]string, error) {
	body, err := d.adminGet(ctx, "/debug/proxies")
	if err != nil {
		return nil, err
	}
	var pr admin.ProxiesResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, fmt.Errorf("/debug/proxies: %w", err)
	}
	m := map[string]string{}
	for _, p := range pr.Proxies {
		m[p.ID] = p.Identity
	}
	return m, nil
}

// startSidecars gives every instance its sidecar and waits until each
// holds a verified SVID, so no instance starts without its certificates.
func (d *demo) startSidecars(ctx context.Context) error {
	for _, in := range d.instances {
		in.svidDir = filepath.Join(d.runDir, "svid", in.id)
		var err error
		if in.sidecar, err = d.startSidecar(ctx, in.id, in.service, in.svidDir); err != nil {
			return err
		}
	}
	return d.waitFor(ctx, 30*time.Second, "every sidecar to hold its SVID", func(ctx context.Context) error {
		var errs []error
		for _, in := range d.instances {
			id, err := d.identityOf(ctx, in.id, in.svidDir)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			in.spiffeID = id
		}
		return errors.Join(errs...)
	})
}

// identityTable says that mTLS is on and lists each instance's SPIFFE ID;
// withFiles adds where the SVID lives (not at the end: the run directory
// is about to go).
func (d *demo) identityTable(withFiles bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mTLS: on. Every call is mutual TLS between SPIFFE identities; Consul intentions: %s.\n", intentionsSummary())
	fmt.Fprintf(&b, "Each instance proved its identity with a one-time join token; its sidecar holds the SVID (verified against the trust bundle):\n")
	for _, in := range d.instances {
		fmt.Fprintf(&b, "  SVID %-10s %s  (node %s", in.id, in.spiffeID, sidecarNode(in.id))
		if withFiles {
			fmt.Fprintf(&b, ", files in %s", in.svidDir)
		}
		b.WriteString(")\n")
	}
	return b.String()
}

// deniedCall is the story's refusal: a workload of a service no
// intention allows (billing) gets a real SVID through its own sidecar
// and join token, then calls EMR once. The mTLS handshake succeeds (both
// sides prove who they are) and EMR's RBAC refuses the call. It runs in
// the background so the story's timing does not depend on it; the
// outcome is printed from the probe's log line (see onLine).
func (d *demo) deniedCall(ctx context.Context) {
	id := deniedCaller + "-1"
	dir := filepath.Join(d.runDir, "svid", id)
	// The probe is the only user of its sidecar; both go when it is done.
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		err := d.runDeniedCall(ctx, id, dir)
		if err != nil && ctx.Err() == nil {
			d.out.printf("!! the denied-call probe did not run: %v", err)
			d.probeProblems.Add(1)
		}
	}()
}

func (d *demo) runDeniedCall(ctx context.Context, id, dir string) error {
	// A previous round's files would pass for this round's SVID before
	// the new sidecar has proved anything.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	sc, err := d.startSidecar(ctx, id, deniedCaller, dir)
	if err != nil {
		return err
	}
	defer d.sup.stop(sc, 10*time.Second)
	// Runs beside the story, which starts and stops instances: watch only
	// the processes this step depends on.
	watch := func() []*proc { return []*proc{d.cp, sc} }
	if err := d.poll(ctx, 30*time.Second, id+"'s SVID", watch, func(ctx context.Context) error {
		_, err := d.identityOf(ctx, id, dir)
		return err
	}); err != nil {
		return err
	}
	p, err := d.sup.startSpec(procSpec{name: id, bin: d.cfg.serviceBin, oneShot: true, args: []string{
		"--probe", "--service", deniedCaller, "--id", id, "--calls", deniedTarget, "--svid-dir", dir,
		"--xds-address", d.xdsAddr, "--log-format", "json",
	}})
	if err != nil {
		return err
	}
	d.out.printf("started %-14s pid=%d  one call to %s as %s (no intention allows it)", id, p.pid(), deniedTarget, deniedCaller)
	select {
	case <-p.done:
	case <-ctx.Done():
		return d.sup.stop(p, 10*time.Second)
	}
	if p.err != nil {
		return fmt.Errorf("%s: %v; see %s", id, p.err, filepath.Join(d.sup.logDir, id+".log"))
	}
	return nil
}

// onProbe reports the probe's outcome: refused with PermissionDenied is
// the story working; anything else is a problem the run reports.
func (d *demo) onProbe(p *proc, l *logLine) {
	switch l.Code {
	case "PermissionDenied":
		d.denied.Add(1)
		d.out.printf("==> refused as intended: %s (%s) -> %s: %s: %s. The mTLS handshake succeeded (server %s); "+
			"%s's RBAC found no intention for %s.", p.name, deniedCaller, l.Target, l.Code, l.Err, l.ServerID, l.Target, deniedCaller)
	case "OK":
		d.probeProblems.Add(1)
		d.out.printf("!! %s (%s) reached %s (answered by %s) although no intention allows it", p.name, deniedCaller, l.Target, l.AnsweredBy)
	default:
		if d.stopping.Load() {
			// Stopped mid-call (Canceled, or the connection closing).
			d.out.printf("%s's call to %s was cut short (%s): the demo is stopping", p.name, l.Target, l.Code)
			return
		}
		d.probeProblems.Add(1)
		d.out.printf("!! %s -> %s: %s: %s (want PermissionDenied from the server's RBAC)", p.name, l.Target, l.Code, l.Err)
	}
}
