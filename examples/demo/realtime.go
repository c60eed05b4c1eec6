package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// The realtime workloads of the edge sites (examples/vitals): a bedside
// monitor streaming to the site's vitals service, which forwards to the
// site's nurse station. They are mesh workloads like the clinical
// services (their own SVID, intentions), run by bin/vitals.
const (
	roleVitals = "vitals service"
	roleNurse  = "vitals nurse"
	roleDevice = "vitals device"
	// A telehealth call (examples/telehealth): the site's signalling
	// service and TURN relay, and a pion clinician and patient.
	roleSignal    = "telehealth signal"
	roleTurn      = "telehealth turn"
	roleClinician = "telehealth clinician"
	rolePatient   = "telehealth patient"
)

// telehealthWorkloads are one video visit at site: its signalling
// service and relay, and the two parties, each a mesh workload with its
// own SVID (the relay is not: it speaks TURN, not gRPC).
func telehealthWorkloads(site string) []*instance {
	return []*instance{
		{id: "turn-" + site, service: "turn", role: roleTurn},
		{id: "telehealth-signal-" + site, service: "telehealth-signal", role: roleSignal},
		{id: "clinician-" + site, service: "clinician-station", role: roleClinician},
		{id: "patient-" + site, service: "patient-app", role: rolePatient},
	}
}

// telehealthIntentions: who may use the signalling service (PHI).
var telehealthIntentions = []string{"clinician-station", "patient-app"}

// realtimeWorkloads are a site's vitals workloads: two vitals instances
// (a device fails over between them), a nurse station and one bedside
// monitor raising an alarm every few seconds.
func realtimeWorkloads(site string) []*instance {
	return []*instance{
		{id: "nurse-" + site, service: "nurse-station", role: roleNurse},
		{id: "vitals-" + site + "-1", service: "vitals", role: roleVitals},
		{id: "vitals-" + site + "-2", service: "vitals", role: roleVitals},
		{id: "bed-" + site, service: "bedside-monitor", role: roleDevice},
	}
}

// realtimeIntentions are the calls the vitals workloads make: all three
// services are PHI (default deny).
var realtimeIntentions = map[string][]string{
	"vitals":        {"bedside-monitor"},
	"nurse-station": {"vitals"},
}

// registers reports whether the instance is a server in Consul (the
// device and the call's parties are callers only).
func (in *instance) registers() bool {
	return in.role != roleDevice && in.role != roleClinician && in.role != rolePatient
}

// inMesh reports whether the instance is a mesh workload (an SVID, an xDS
// stream): all but the TURN relay.
func (in *instance) inMesh() bool { return in.role != roleTurn }

// args is the instance's command line: clinical-service for the clinical
// services, bin/vitals for the others.
func (d *demo) args(in *instance) (bin string, args []string) {
	common := []string{"--id", in.id, "--consul", "http://" + in.site.consul.Addr(), "--xds-address", in.site.xdsAddr,
		"--svid-dir", in.svidDir, "--log-format", "json", "--report", "1s"}
	if in.role == "" {
		args = append([]string{"--service", in.service, "--port", fmt.Sprint(in.port), "--interval", d.cfg.callInterval.String()}, common...)
		if len(in.calls) > 0 {
			args = append(args, "--calls", strings.Join(in.calls, ","))
		}
		return d.cfg.serviceBin, args
	}
	switch in.role {
	case roleTurn:
		return filepath.Join(d.cfg.binDir, "telehealth-turn"), []string{"--id", in.id, "--site", in.site.name,
			"--listen-ip", "127.0.0.1", "--udp-port", fmt.Sprint(in.port), "--tcp-port", fmt.Sprint(in.port2), "--tls-port", "0",
			"--relay-ports", "49360-49399", "--secret-file", in.site.turnSecret, "--consul", "http://" + in.site.consul.Addr(), "--log-format", "json"}
	case roleSignal:
		return filepath.Join(d.cfg.binDir, "telehealth-signal"), []string{"--id", in.id, "--port", fmt.Sprint(in.port),
			"--http-listen", in.httpAddr, "--consul", "http://" + in.site.consul.Addr(), "--xds-address", in.site.xdsAddr,
			"--svid-dir", in.svidDir, "--site", in.site.name, "--turn-secret-file", in.site.turnSecret, "--log-format", "json"}
	case roleClinician, rolePatient:
		return filepath.Join(d.cfg.binDir, "telehealth-peer"), []string{"--role", strings.TrimPrefix(in.role, "telehealth "),
			"--service", in.service, "--id", in.id, "--xds-address", in.site.xdsAddr, "--svid-dir", in.svidDir,
			"--call", "demo-visit-" + in.site.name, "--loopback-only", "--udp-ports", "49400-49599", "--report", "1s", "--log-format", "json"}
	}
	role := strings.TrimPrefix(in.role, "vitals ")
	args = append([]string{role}, common...)
	switch in.role {
	case roleDevice:
		args = append(args, "--device", in.id, "--alarm-every", "3s")
	case roleNurse:
		args = append(args, "--port", fmt.Sprint(in.port), "--http-listen", in.httpAddr)
	default:
		args = append(args, "--port", fmt.Sprint(in.port), "--limit", "8", "--work", "1ms")
	}
	return filepath.Join(d.cfg.binDir, "vitals"), args
}

// realtime keeps the last figures each site's vitals workloads logged.
type realtime struct {
	mu     sync.Mutex
	nurse  map[string]map[string]any // site -> the nurse station's last "vitals" line
	device map[string]map[string]any // site -> the device's
	// active is each vitals instance's open device streams, as it last
	// logged them.
	active map[string]float64
	call   map[string]map[string]any // site -> the clinician's last "call" line
}

func newRealtime() *realtime {
	return &realtime{nurse: map[string]map[string]any{}, device: map[string]map[string]any{}, active: map[string]float64{},
		call: map[string]map[string]any{}}
}

func (r *realtime) add(in *instance, line []byte) {
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch in.role {
	case roleNurse:
		r.nurse[in.site.name] = m
	case roleDevice:
		r.device[in.site.name] = m
	case roleVitals:
		v, _ := m["active"].(float64)
		r.active[in.id] = v
	case roleClinician:
		r.call[in.site.name] = m
	}
}

// callLine is the site's telehealth call as its clinician last reported
// it, or "".
func (r *realtime) callLine(site string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.call[site]
	if m == nil {
		return ""
	}
	num := func(k string) float64 { v, _ := m[k].(float64); return v }
	state, _ := m["state"].(string)
	s := fmt.Sprintf("telehealth call (pion clinician and patient, signalling through the mesh): %s", state)
	if v := num("setup_ms"); v > 0 {
		s += fmt.Sprintf(", set up in %.1f ms", v)
	}
	return s + fmt.Sprintf("; %.0f video RTP packets, %.0f vitals frames on the DataChannel (p99 %.2f ms, %.0f bad CRC), %.0f reconnects",
		num("rtp_packets"), num("frames"), num("frame_p99_ms"), num("frames_bad_crc"), num("reconnects"))
}

// holder is the vitals instance among ids holding a device stream, or "".
func (r *realtime) holder(ids ...string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.active[id] > 0 {
			return id
		}
	}
	return ""
}

// line is a site's realtime summary for the status block, or "".
func (r *realtime) line(site string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, dev := r.nurse[site], r.device[site]
	if n == nil {
		return ""
	}
	num := func(m map[string]any, k string) float64 { v, _ := m[k].(float64); return v }
	var b strings.Builder
	p99 := func(class string) string {
		if num(n, class+"_frames") == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f ms", num(n, class+"_p99_ms"))
	}
	fmt.Fprintf(&b, "vitals (last second, device clock to nurse station): alarm p99 %s (budget 20 ms), ECG p99 %s (50 ms), SpO2/BP p99 %s (100 ms); %.0f frames",
		p99("emergency"), p99("critical"), p99("routine"),
		num(n, "emergency_frames")+num(n, "critical_frames")+num(n, "routine_frames")+num(n, "background_frames"))
	if dev != nil {
		fmt.Fprintf(&b, "; device: %.0f reliable sent, %.0f acknowledged, %.0f reconnects", num(dev, "sent_reliable"), num(dev, "acked"), num(dev, "reconnects"))
	}
	return b.String()
}

// sites lists the sites with figures, sorted.
func (r *realtime) sites() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for s := range r.nurse {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
