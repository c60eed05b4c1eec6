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
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/api/admin"
)

// joinToken asks a site's control plane for a one-time join token for
// service: the proof of identity its sidecar presents.
func (s *site) joinToken(ctx context.Context, service string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u := "http://" + s.adminAddr + "/join-tokens?service=" + url.QueryEscape(service)
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

// startSidecar starts `medmesh sidecar --svid-dir` for one workload of a
// site with a fresh join token from that site's control plane. It keeps
// the workload's SVID and bundle files fresh for as long as it runs,
// across restarts of the workload itself.
func (d *demo) startSidecar(ctx context.Context, s *site, id, service, dir string) (*proc, error) {
	tok, err := s.joinToken(ctx, service)
	if err != nil {
		return nil, err
	}
	p, err := d.sup.startSpec(procSpec{
		name: id + ".svid", bin: d.cfg.medmesh,
		// No ext_proc extension: it serves Envoy, and the demo's
		// services are proxyless gRPC; the sidecar is their SVID agent.
		args: []string{"sidecar", "--svid-dir", dir, "--node-id", sidecarNode(id), "--service", service, "--site", s.name,
			"--xds-address", s.xdsAddr, "--extproc-listen=", "--log-format", "json"},
		// `medmesh sidecar` reads --join-token's default from here.
		env: []string{"MEDMESH_JOIN_TOKEN=" + tok},
	})
	if err != nil {
		return nil, err
	}
	d.out.printf("site %-5s started %-20s pid=%d  medmesh sidecar --svid-dir %s --service %s --site %s (join token in $MEDMESH_JOIN_TOKEN)",
		s.name, p.name, p.pid(), dir, service, s.name)
	return p, nil
}

// svidFiles are the files `medmesh sidecar --svid-dir` writes and the
// proxyless bootstrap's certificate provider reads.
var svidFiles = []string{"svid.pem", "svid_key.pem", "bundle.pem"}

// identityOf reports the SPIFFE ID an instance's sidecar has written,
// once the control plane has attested the sidecar and the SVID in the
// files verifies against the bundle beside it.
func identityOf(ctx context.Context, s *site, id, dir string) (string, error) {
	pr, err := s.proxies(ctx)
	if err != nil {
		return "", err
	}
	identities := map[string]string{}
	for _, p := range pr.Proxies {
		identities[p.ID] = p.Identity
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

// startSidecars gives every instance its sidecar and waits until each
// holds a verified SVID, so no instance starts without its certificates.
func (d *demo) startSidecars(ctx context.Context) error {
	for _, in := range d.instances {
		if !in.inMesh() {
			continue
		}
		in.svidDir = filepath.Join(d.runDir, in.site.name, "svid", in.id)
		var err error
		if in.sidecar, err = d.startSidecar(ctx, in.site, in.id, in.service, in.svidDir); err != nil {
			return err
		}
	}
	return d.waitFor(ctx, 30*time.Second, "every sidecar to hold its SVID", func(ctx context.Context) error {
		var errs []error
		for _, in := range d.instances {
			if !in.inMesh() {
				continue
			}
			id, err := identityOf(ctx, in.site, in.id, in.svidDir)
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
	fmt.Fprintf(&b, "mTLS: on. Every call is mutual TLS between SPIFFE identities, one trust domain for the network.\n")
	fmt.Fprintf(&b, "Each instance proved its identity with a one-time join token to its site's control plane; its sidecar holds the SVID "+
		"(the hub's signed by the hospital root, the edge sites' by their own intermediate; verified against the trust bundle):\n")
	for _, in := range d.instances {
		if !in.inMesh() {
			continue
		}
		fmt.Fprintf(&b, "  SVID %-15s %s", in.id, in.spiffeID)
		if withFiles {
			fmt.Fprintf(&b, "  (files in %s)", in.svidDir)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// probeSpec is a one-shot call the story makes from a workload of its own
// (with its own sidecar and join token) to show a call the mesh refuses.
type probeSpec struct {
	id, service, target, site string
	// wait is how long the probe retries Unavailable (see
	// clinical-service --probe-wait).
	wait time.Duration
	// judge reads the probe's outcome: what to print, and whether it
	// is what the story expects.
	judge func(l *logLine) (say string, asIntended bool)
}

// deniedProbe: a workload of a service no intention allows (billing) gets
// a real SVID and calls EMR at the hub. Configuration follows
// authorization: billing's scope does not hold EMR, so its own gRPC client
// refuses the call at once (PermissionDenied) without connecting; EMR's
// RBAC, after an mTLS handshake, is the second line.
var deniedProbe = probeSpec{id: "billing-1", service: "billing", target: "emr", site: "hub", wait: 15 * time.Second,
	judge: func(l *logLine) (string, bool) {
		if l.Code == "PermissionDenied" {
			return fmt.Sprintf("refused as intended: billing-1 (billing) -> emr: %s: %s (server %s). billing's own client refused it: "+
				"no intention allows billing -> emr, so the control plane sent billing nothing of emr (`medmesh status --scope billing`); "+
				"emr's RBAC would refuse it as well.", l.Code, l.Err, l.ServerID), true
		}
		return fmt.Sprintf("billing-1 -> emr: %s (answered by %s): %s; want PermissionDenied", l.Code, l.AnsweredBy, l.Err), false
	}}

// residencyProbe: HIS at site north calls EMR, which runs only at the hub.
// North's control plane sends it no EMR (residency), so the call fails at
// north, never reaching the hub; the hub's RBAC would refuse it as well.
// gRPC reports a resource the control plane does not send after its
// 15 s resource timeout, so the probe waits for longer than that.
var residencyProbe = probeSpec{id: "his-probe", service: "his", target: "emr", site: "north", wait: 20 * time.Second,
	judge: func(l *logLine) (string, bool) {
		if l.Code == "OK" || !strings.HasPrefix(l.ServerID, "none") {
			return fmt.Sprintf("his-probe (his at north) reached emr (answered by %s, server %s): PHI left its site", l.AnsweredBy, l.ServerID), false
		}
		return fmt.Sprintf("held back as intended: his-probe (his at north) -> emr: %s: %s. No connection to the hub was made: "+
			"north has no EMR and residency gave it none of the hub's.", l.Code, l.Err), true
	}}

// probe runs p in the background, so the story's timing does not depend
// on it; the outcome is printed from the probe's log line (see onProbe).
func (d *demo) probe(ctx context.Context, p probeSpec) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		err := d.runProbe(ctx, p)
		if err != nil && ctx.Err() == nil {
			d.out.printf("!! the probe %s did not run: %v", p.id, err)
			d.probeProblems.Add(1)
		}
	}()
}

func (d *demo) runProbe(ctx context.Context, spec probeSpec) error {
	s := d.site(spec.site)
	dir := filepath.Join(d.runDir, s.name, "svid", spec.id)
	// A previous round's files would pass for this round's SVID before
	// the new sidecar has proved anything.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// The probe is the only user of its sidecar; both go when it is done.
	sc, err := d.startSidecar(ctx, s, spec.id, spec.service, dir)
	if err != nil {
		return err
	}
	defer d.sup.stop(sc, 10*time.Second)
	// Runs beside the story, which starts and stops instances: watch only
	// the processes this step depends on.
	watch := func() []*proc { return []*proc{s.cp, sc} }
	if err := d.poll(ctx, 30*time.Second, spec.id+"'s SVID", watch, func(ctx context.Context) error {
		_, err := identityOf(ctx, s, spec.id, dir)
		return err
	}); err != nil {
		return err
	}
	p, err := d.sup.startSpec(procSpec{name: spec.id, bin: d.cfg.serviceBin, oneShot: true, args: []string{
		"--probe", "--service", spec.service, "--id", spec.id, "--calls", spec.target, "--svid-dir", dir,
		"--probe-wait", spec.wait.String(), "--xds-address", s.xdsAddr, "--log-format", "json",
	}})
	if err != nil {
		return err
	}
	d.probes.Store(p, spec)
	d.out.printf("site %-5s started %-20s pid=%d  one call to %s as %s", s.name, spec.id, p.pid(), spec.target, spec.service)
	select {
	case <-p.done:
	case <-ctx.Done():
		return d.sup.stop(p, 10*time.Second)
	}
	if p.err != nil {
		return fmt.Errorf("%s: %v; see %s", spec.id, p.err, filepath.Join(d.sup.logDir, spec.id+".log"))
	}
	return nil
}

// onProbe reports a probe's outcome: the refusal the story expects, or a
// problem the run reports.
func (d *demo) onProbe(p *proc, l *logLine) {
	v, ok := d.probes.Load(p)
	if !ok {
		return
	}
	say, asIntended := v.(probeSpec).judge(l)
	switch {
	case asIntended:
		d.refused.Add(1)
		d.out.printf("==> %s", say)
	case d.stopping.Load() && l.Code != "OK":
		// Stopped mid-call (Canceled, or the connection closing).
		d.out.printf("%s's call to %s was cut short (%s): the demo is stopping", p.name, l.Target, l.Code)
	default:
		d.probeProblems.Add(1)
		d.out.printf("!! %s", say)
	}
}
