package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/internal/simproxy"
)

// received sums what the fleet's streams were sent, by variant. SDS
// secrets are counted apart: a restarted control plane issues every
// proxy a fresh SVID (workload keys are never written to disk), so with
// mTLS they are re-sent by design; everything else should not be.
type received struct {
	resources, responses map[bool]int // by delta
	bytes                map[bool]int64
	edsAnswered          map[bool]int // proxies with an endpoint response
	secrets              int
	secretBytes          int64
}

func (f *fleet) received() received {
	r := received{resources: map[bool]int{}, responses: map[bool]int{}, bytes: map[bool]int64{}, edsAnswered: map[bool]int{}}
	for _, t := range f.proxies {
		if t.p == nil {
			continue
		}
		for typ, got := range t.p.Received() {
			if typ == resource.SecretType {
				r.secrets += got.Resources
				r.secretBytes += got.Bytes
				continue
			}
			r.resources[t.delta] += got.Resources
			r.responses[t.delta] += got.Responses
			r.bytes[t.delta] += got.Bytes
			if typ == resource.EndpointType && got.Responses > 0 {
				r.edsAnswered[t.delta]++
			}
		}
	}
	return r
}

// sentFigures are what a fleet was sent, for the full-config phase.
func sentFigures(prefix string, r received) []figure {
	return []figure{
		{name: prefix + "_resources_sent", value: float64(r.resources[false] + r.resources[true]), format: "%.0f"},
		{name: prefix + "_bytes_sent", value: float64(r.bytes[false] + r.bytes[true]), format: "%.0f", unit: "B"},
	}
}

// restartPhase is what measureRestart needs from the run.
type restartPhase struct {
	bin, consulAddr, dir, goMemLimit string
	// name and mtlsStateDir as startControlPlane takes them (the CA kept
	// across the restart); scopes as the fleet had them.
	name, mtlsStateDir        string
	scopes                    map[string]map[string]bool
	nodes                     []synthInstance
	services, conns, starters int
	timeout                   time.Duration
}

// measureRestart stops the control plane and starts another on the same
// Consul catalog, nothing changed, and reconnects every proxy the moment
// the new one listens, each naming what it holds (delta:
// initial_resource_versions; SotW: the version of every type), as a fleet
// of Envoys does. It counts what the new control plane sends: the goal is
// no resource at all to delta proxies and the same version strings for
// SotW ones. The returned control plane is the new one.
func measureRestart(ctx context.Context, ph restartPhase, fl *fleet, old *cpProcess) ([]figure, *cpProcess, error) {
	held := make(map[string]*simproxy.Held, len(fl.proxies))
	versions := map[string]map[string]string{} // SotW proxy -> type -> version
	types := []string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.EndpointType}
	for _, t := range fl.proxies {
		held[t.id] = t.p.Held()
		if !t.delta {
			versions[t.id] = map[string]string{}
			for _, typ := range types {
				versions[t.id][typ] = t.p.Version(typ)
			}
		}
	}
	fl.stop()
	old.stop()
	dir := filepath.Join(ph.dir, "restarted")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	cp, err := startControlPlane(ph.bin, ph.consulAddr, dir, ph.goMemLimit, ph.name, ph.mtlsStateDir)
	if err != nil {
		return nil, nil, err
	}
	if err := waitListening(ctx, cp, time.Minute); err != nil {
		return nil, cp, err
	}
	start := time.Now()
	fl2, err := startFleet(ctx, fleetOptions{XDSAddr: cp.XDSAddr, Conns: ph.conns, Starters: ph.starters, Resume: held, Scopes: ph.scopes}, ph.nodes, ph.services)
	if err != nil {
		return nil, cp, err
	}
	defer fl2.stop()
	logf("control plane restarted (pid %d); %d proxies reconnected naming what they hold", cp.Pid(), len(fl2.proxies))
	if err := cp.waitReady(ctx, 5*time.Minute); err != nil {
		return nil, cp, err
	}
	// Done when every SotW proxy's endpoints were answered (the resumed
	// subscription gets its version back) and nothing more arrives.
	sotwProxies := len(fl2.proxies) - len(fl2.proxies)/2
	var resync time.Duration
	deadline := time.Now().Add(ph.timeout)
	last, quietSince := fl2.received(), time.Now()
	for {
		if err := fl2.failed(); err != nil {
			return nil, cp, err
		}
		now := fl2.received()
		if resync == 0 && now.edsAnswered[false] >= sotwProxies {
			resync = time.Since(start)
		}
		if fmt.Sprint(now) != fmt.Sprint(last) {
			last, quietSince = now, time.Now()
		}
		if resync > 0 && time.Since(quietSince) >= 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			return nil, cp, fmt.Errorf("restart: %d of %d SotW proxies had their endpoints answered after %s",
				now.edsAnswered[false], sotwProxies, ph.timeout)
		}
		select {
		case <-ctx.Done():
			return nil, cp, ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling the counters
		}
	}
	changed, missing := 0, 0
	for _, t := range fl2.proxies {
		if !fl2.holdsFullConfig(t) {
			missing++
		}
		if t.delta {
			continue
		}
		for _, typ := range types {
			if v := t.p.Version(typ); v != versions[t.id][typ] {
				changed++
			}
		}
	}
	r := fl2.received()
	byType := map[string]int{}
	for _, t := range fl2.proxies {
		if t.delta {
			for typ, got := range t.p.Received() {
				byType[typ] += got.Resources
			}
		}
	}
	logf("after the restart, delta proxies were sent by type: %v", byType)
	logf("after the restart: delta proxies were sent %d resources (%d B), SotW proxies %d (%d B); %d SotW versions changed",
		r.resources[true], r.bytes[true], r.resources[false], r.bytes[false], changed)
	return []figure{
		{name: "xds_restart_resources_resent_delta", value: float64(r.resources[true]), format: "%.0f", target: "0", ok: within(float64(r.resources[true]), 0)},
		{name: "xds_restart_resources_resent_sotw", value: float64(r.resources[false]), format: "%.0f"},
		{name: "xds_restart_endpoints_resent_sotw", value: float64(fl2.sentOf(resource.EndpointType, false)), format: "%.0f", target: "0",
			ok: within(float64(fl2.sentOf(resource.EndpointType, false)), 0)},
		{name: "xds_restart_bytes_sent", value: float64(r.bytes[true] + r.bytes[false]), format: "%.0f", unit: "B"},
		{name: "xds_restart_bytes_sent_delta", value: float64(r.bytes[true]), format: "%.0f", unit: "B"},
		{name: "xds_restart_bytes_sent_sotw", value: float64(r.bytes[false]), format: "%.0f", unit: "B"},
		{name: "xds_restart_svids_reissued", value: float64(r.secrets), format: "%.0f"},
		{name: "xds_restart_svid_bytes_sent", value: float64(r.secretBytes), format: "%.0f", unit: "B"},
		{name: "xds_restart_sotw_versions_changed", value: float64(changed), format: "%.0f", target: "0", ok: within(float64(changed), 0)},
		{name: "xds_restart_proxies_missing_config", value: float64(missing), format: "%.0f", target: "0", ok: within(float64(missing), 0)},
		{name: "xds_restart_resync_s", value: resync.Seconds(), format: "%.2f", unit: "s"},
	}, cp, nil
}

// sentOf counts the resources of one type sent to one variant.
func (f *fleet) sentOf(typeURL string, delta bool) int {
	n := 0
	for _, t := range f.proxies {
		if t.p != nil && t.delta == delta {
			n += t.p.Received()[typeURL].Resources
		}
	}
	return n
}

// waitListening waits until the control plane accepts xDS connections:
// proxies reconnect then, not when it is ready.
func waitListening(ctx context.Context, cp *cpProcess, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", cp.XDSAddr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if err := cp.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control plane not listening on %s after %s", cp.XDSAddr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling the port
		}
	}
}
