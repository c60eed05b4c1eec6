package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// instance is one example service instance the demo runs.
type instance struct {
	id, service string
	calls       []string
	// role is "" for a clinical service (bin/clinical-service), or one
	// of the realtime roles (realtime.go).
	role     string
	httpAddr string // the nurse station's page, the signalling's browser door
	port2    int    // the TURN relay's TCP port
	site     *site
	port     int   // chosen once, kept across restarts
	proc     *proc // current process; nil while stopped by the story
	// sidecar is the instance's `medmesh sidecar --svid-dir`: it runs
	// for the whole demo, across the story's restarts of the instance,
	// as a workload's identity agent outlives a restart of its app.
	sidecar  *proc
	svidDir  string
	spiffeID string // as issued and verified at start
}

// step is one scripted event, at a multiple of the demo's step length
// after the mesh is up.
type step struct {
	at   int // in steps
	say  string
	what func(ctx context.Context, d *demo) error
}

// story first has a caller without an intention refused, so the run
// shows that identities are checked and not just encrypted, and a caller
// at an edge site held back from the hub's EMR by residency; then it
// makes services come and go so the tables show the mesh following the
// registry, fails a non-PHI service over to another site, and cuts an
// edge site's uplink and restores it. It repeats every storyLength steps
// for as long as the demo runs.
var story = []step{
	{0, "billing-1 calls emr once at the hub. It proves it is 'billing' (join token, SVID from its own sidecar), but no Consul intention allows billing -> emr, " +
		"and EMR is a PHI service: default deny. Configuration follows authorization, so billing was never sent EMR's address. " +
		"Watch: billing's own client refuses the call at once with PermissionDenied.",
		func(ctx context.Context, d *demo) error { d.probe(ctx, deniedProbe); return nil }},
	{1, "his-probe at site north calls emr once. EMR runs only at the hub and is PHI: the residency policy keeps patient data on its site, so north's control plane " +
		"sends its proxies no EMR at all (north's status: 'residency: emr at hub: held back'). Watch: the call fails at north, with gRPC's own words for a service that does not exist here " +
		"(after its 15 s wait for the resource); it never reaches the hub.",
		func(ctx context.Context, d *demo) error { d.probe(ctx, residencyProbe); return nil }},
	{2, "emr-2 stops (SIGTERM). It leaves Consul first and keeps serving for a moment, so callers move to emr-1 without failed calls. " +
		"Watch: emr-2 leaves the hub's tables; 'answered by' shows only emr-1.",
		func(ctx context.Context, d *demo) error { return d.stopInstance("emr-2") }},
	{3, "emr-2 starts again. It registers (check critical), gets its inbound listener over xDS, turns its check passing, and callers use it again. " +
		"Watch: traffic spread over emr-1 and emr-2.",
		func(ctx context.Context, d *demo) error { return d.startInstance(d.instance("emr-2")) }},
	{4, "formulary-north fails its health check (SIGUSR1). The formulary is not PHI, so the residency policy lets north's calls fail over to another site: " +
		"his-north's formulary calls go to the hub's formulary-1 (local instances first, other sites next). Watch: his-north -> formulary answered by formulary-1.",
		func(ctx context.Context, d *demo) error { return d.signalInstance("formulary-north", syscall.SIGUSR1) }},
	{5, "formulary-north recovers (SIGUSR2). Watch: his-north's formulary calls come back home to formulary-north.",
		func(ctx context.Context, d *demo) error { return d.signalInstance("formulary-north", syscall.SIGUSR2) }},
	{6, "the vitals instance bed-south streams to is killed (SIGKILL: no goodbye, its Consul check still passing). Watch: the device reconnects through the mesh " +
		"to the other instance and resends from its last acknowledged frame; south's vitals line shows 1 reconnect, acknowledged keeping up with sent, and the alarms within budget.",
		func(ctx context.Context, d *demo) error { return d.killVitals("south") }},
	{7, "the killed vitals instance starts again (same ID and port) and rejoins the mesh.",
		func(ctx context.Context, d *demo) error { return d.restartKilled() }},
	{8, "site north loses its uplink: the demo cuts the links its Consul peerings run over (to the hub and to south). North is on its own. " +
		"Watch: north's calls and vitals go on without a failure, north marks its peers stale (kept, not deleted), the hub and south mark north stale.",
		func(ctx context.Context, d *demo) error { return d.cut(ctx, d.site("north")) }},
	{10, "site north's uplink is back. Watch: the peerings turn ACTIVE again, and north's control plane sends its proxies nothing, since nothing changed for them.",
		func(ctx context.Context, d *demo) error { return d.restore(ctx, d.site("north")) }},
}

// storyLength is one round of the story, in steps; the pause after the
// last event lets its effect show before the next round.
const storyLength = 12

// killVitals kills, without a goodbye, the vitals instance of site that
// holds the site's device stream (as the instances last logged it).
func (d *demo) killVitals(site string) error {
	id := d.rt.holder("vitals-"+site+"-1", "vitals-"+site+"-2")
	if id == "" {
		return fmt.Errorf("no vitals instance at %s reports the device's stream yet", site)
	}
	in := d.instance(id)
	if in.proc == nil {
		return fmt.Errorf("%s is not running", id)
	}
	d.out.printf("killing %s (pid %d), which holds bed-%s's stream", id, in.proc.pid(), site)
	d.sup.kill(in.proc)
	in.proc = nil
	d.killed = in
	return nil
}

func (d *demo) restartKilled() error {
	if d.killed == nil {
		return fmt.Errorf("nothing was killed")
	}
	in := d.killed
	d.killed = nil
	return d.startInstance(in)
}

// storyClock yields the events of the repeating story in order.
type storyClock struct {
	stepLen time.Duration
	round   int
	next    int
}

// played reports whether the story has played rounds times (never when
// rounds is 0).
func (s *storyClock) played(rounds int) bool {
	return rounds > 0 && s.round >= rounds && s.next == 0
}

// nextEvent returns the next step and when it is due, relative to the
// moment the mesh came up.
func (s *storyClock) nextEvent() (step, time.Duration) {
	st := story[s.next]
	at := time.Duration(s.round*storyLength+st.at) * s.stepLen
	s.next++
	if s.next == len(story) {
		s.next, s.round = 0, s.round+1
	}
	return st, at
}

func (d *demo) instance(id string) *instance {
	for _, in := range d.instances {
		if in.id == id {
			return in
		}
	}
	panic("demo: no instance " + id) // the story names only known instances
}

func (d *demo) stopInstance(id string) error {
	in := d.instance(id)
	if in.proc == nil {
		return fmt.Errorf("%s is not running", id)
	}
	err := d.sup.stop(in.proc, 10*time.Second)
	in.proc = nil
	return err
}

func (d *demo) signalInstance(id string, sig syscall.Signal) error {
	in := d.instance(id)
	if in.proc == nil {
		return fmt.Errorf("%s is not running", id)
	}
	return d.sup.signal(in.proc, sig)
}

// startInstance starts (or restarts, on the same port and ID) one service
// instance.
func (d *demo) startInstance(in *instance) error {
	bin, args := d.args(in)
	p, err := d.sup.start(in.id, bin, args...)
	if err != nil {
		return err
	}
	in.proc = p
	switch {
	case in.role == roleDevice:
		d.out.printf("site %-5s started %-15s pid=%d  a bedside monitor streaming to xds:///vitals (alarm every 3s)", in.site.name, in.id, p.pid())
	case in.role == roleNurse:
		d.out.printf("site %-5s started %-15s pid=%d  serves 127.0.0.1:%d, its page at http://%s/", in.site.name, in.id, p.pid(), in.port, in.httpAddr)
	case in.role == roleVitals:
		d.out.printf("site %-5s started %-15s pid=%d  serves 127.0.0.1:%d  forwards to xds:///nurse-station", in.site.name, in.id, p.pid(), in.port)
	case in.role == roleTurn:
		d.out.printf("site %-5s started %-15s pid=%d  TURN relay on 127.0.0.1:%d (UDP, TCP %d), relayed media on UDP 49360-49399", in.site.name, in.id, p.pid(), in.port, in.port2)
	case in.role == roleSignal:
		d.out.printf("site %-5s started %-15s pid=%d  serves 127.0.0.1:%d (gRPC), browser door http://%s/", in.site.name, in.id, p.pid(), in.port, in.httpAddr)
	case in.role != "":
		d.out.printf("site %-5s started %-15s pid=%d  joins the site's video visit through xds:///telehealth-signal", in.site.name, in.id, p.pid())
	default:
		calls := "nothing"
		if len(in.calls) > 0 {
			calls = strings.Join(in.calls, ", ")
		}
		d.out.printf("site %-5s started %-15s pid=%d  serves 127.0.0.1:%d  calls %s", in.site.name, in.id, p.pid(), in.port, calls)
	}
	return nil
}
