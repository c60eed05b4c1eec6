package ir

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"medmesh/registry"
)

// Internal tests: commonPort is unexported and is what TCP callers dial.

func catalog(t *testing.T, svcs ...registry.Service) *registry.Catalog {
	t.Helper()
	var raw []registry.RawInstance
	for _, s := range svcs {
		for _, in := range s.Instances {
			raw = append(raw, registry.RawInstance{
				ServiceName: s.Name, ID: in.ID, Address: in.Address, Port: in.Port, Health: in.Health, Weight: in.Weight,
				ServiceMeta: map[string]string{
					registry.MetaKind: string(s.Kind), registry.MetaProtocol: string(s.Protocol), registry.MetaLB: string(s.LB),
					registry.MetaRegion: in.Locality.Region, registry.MetaZone: in.Locality.Zone, registry.MetaSite: in.Locality.Site,
				},
			})
		}
	}
	cat, warns := registry.BuildCatalog(raw)
	if len(warns) != 0 {
		t.Fatalf("catalog warnings: %v", warns)
	}
	return cat
}

func svc(name string, kind registry.Kind, proto registry.Protocol, lb registry.LBPolicy, ins ...registry.Instance) registry.Service {
	return registry.Service{Name: name, Kind: kind, Protocol: proto, LB: lb, Instances: ins}
}

func inst(id string, port int, h registry.Health, loc registry.Locality) registry.Instance {
	return registry.Instance{ID: id, Address: "10.0.0.1", Port: port, Health: h, Locality: loc}
}

func TestRouteDefaultsPerKind(t *testing.T) {
	d := DefaultDefaults()
	httpRetry := []string{"5xx", "reset", "connect-failure", "retriable-status-codes"}
	grpcRetry := []string{"unavailable", "connect-failure", "refused-stream"}
	tests := []struct {
		kind      registry.Kind
		proto     registry.Protocol
		timeout   time.Duration
		perTry    time.Duration
		websocket bool
		retryOn   []string
		// idempotent: HTTP retries are limited to idempotent methods; gRPC's
		// conditions mean the server never started the call.
		idempotent bool
	}{
		{registry.KindEMR, registry.ProtocolHTTP, 15 * time.Second, 5 * time.Second, false, httpRetry, true},
		{registry.KindHIS, registry.ProtocolHTTP2, 15 * time.Second, 5 * time.Second, false, httpRetry, true},
		{registry.KindGeneric, registry.ProtocolGRPC, 15 * time.Second, 5 * time.Second, false, grpcRetry, false},
		// Studies can be gigabytes.
		{registry.KindImaging, registry.ProtocolHTTP, 300 * time.Second, 120 * time.Second, false, httpRetry, true},
		{registry.KindImaging, registry.ProtocolGRPC, 300 * time.Second, 120 * time.Second, false, grpcRetry, false},
		// Long-lived WebSockets: no whole-request timeout.
		{registry.KindVitals, registry.ProtocolHTTP, 0, 5 * time.Second, true, httpRetry, true},
		{registry.KindWebRTC, registry.ProtocolHTTP, 0, 5 * time.Second, true, httpRetry, true},
		// Not pinned here: vitals or webrtc over grpc/http2 currently get the
		// 15s request timeout, which would end a long-lived gRPC stream; that
		// is a design question, not a default to freeze in a test.
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+string(tt.proto), func(t *testing.T) {
			r := d.route(Kind(tt.kind), Protocol(tt.proto))
			if r.Timeout != tt.timeout {
				t.Errorf("timeout %v, want %v", r.Timeout, tt.timeout)
			}
			if r.Retry.PerTryTimeout != tt.perTry {
				t.Errorf("per-try timeout %v, want %v", r.Retry.PerTryTimeout, tt.perTry)
			}
			if r.WebSocket != tt.websocket {
				t.Errorf("websocket %t, want %t", r.WebSocket, tt.websocket)
			}
			if !slices.Equal(r.Retry.RetryOn, tt.retryOn) {
				t.Errorf("retry on %v, want %v", r.Retry.RetryOn, tt.retryOn)
			}
			if r.Retry.IdempotentOnly != tt.idempotent {
				t.Errorf("idempotent only %t, want %t", r.Retry.IdempotentOnly, tt.idempotent)
			}
			if tt.idempotent && !slices.Equal(r.Retry.RetriableStatusCodes, []uint32{429}) {
				t.Errorf("retriable status codes %v, want [429]", r.Retry.RetriableStatusCodes)
			}
			if r.IdleTimeout != 5*time.Minute || r.Retry.Attempts != 2 {
				t.Errorf("idle %v attempts %d, want 5m and 2", r.IdleTimeout, r.Retry.Attempts)
			}
			if r.Retry.BackoffBase <= 0 || r.Retry.BackoffMax < r.Retry.BackoffBase {
				t.Errorf("backoff %v..%v", r.Retry.BackoffBase, r.Retry.BackoffMax)
			}
		})
	}
}

// Relations the clinical defaults rely on, independent of their values.
func TestDefaultDefaultsInvariants(t *testing.T) {
	d := DefaultDefaults()
	if d.PerTryTimeout*time.Duration(d.RetryAttempts+1) > d.RequestTimeout {
		t.Errorf("%d tries of %v do not fit the %v request timeout", d.RetryAttempts+1, d.PerTryTimeout, d.RequestTimeout)
	}
	if d.ImagingPerTry >= d.ImagingTimeout || d.ImagingTimeout <= d.RequestTimeout {
		t.Errorf("imaging per-try %v, timeout %v, request timeout %v", d.ImagingPerTry, d.ImagingTimeout, d.RequestTimeout)
	}
	if d.Outlier.MaxEjectionPercent > 50 {
		t.Errorf("max ejection %d%%: never eject more than half of a clinical service", d.Outlier.MaxEjectionPercent)
	}
	if d.ConnectTimeout <= 0 || d.ConnectTimeout > 5*time.Second {
		t.Errorf("connect timeout %v: fail over quickly", d.ConnectTimeout)
	}
}

// Build takes its settings from the Defaults it is given, not from
// DefaultDefaults, so policies and tests can change them.
func TestBuildUsesGivenDefaults(t *testing.T) {
	d := DefaultDefaults()
	d.RequestTimeout, d.ConnectTimeout = 42*time.Second, 7*time.Second
	d.CircuitBreaker.MaxRequests = 9
	d.Outlier.Consecutive5xx = 11
	cat := catalog(t, svc("emr", registry.KindEMR, registry.ProtocolHTTP, registry.LBRoundRobin, inst("emr-1", 8080, registry.HealthPassing, registry.Locality{})))
	s := Build(Inputs{Catalog: cat, Defaults: d, TrustDomain: "medmesh.local"}).Services[0]
	if s.Route.Timeout != 42*time.Second || s.ConnectTimeout != 7*time.Second || s.CircuitBreaker.MaxRequests != 9 || s.Outlier.Consecutive5xx != 11 {
		t.Errorf("service did not take the given defaults: %+v", s)
	}
}

func TestBuildEndpoints(t *testing.T) {
	north := registry.Locality{Region: "north", Zone: "north-a", Site: "st-marys"}
	south := registry.Locality{Region: "south", Zone: "south-b"}
	east := registry.Locality{Region: "east"}
	cat := catalog(t, svc("emr", registry.KindEMR, registry.ProtocolHTTP, registry.LBRoundRobin,
		inst("emr-4", 8080, registry.HealthPassing, south),
		inst("emr-1", 8080, registry.HealthPassing, north),
		inst("emr-2", 8080, registry.HealthWarning, north),
		inst("emr-3", 8080, registry.HealthCritical, south),
		inst("emr-5", 8080, registry.HealthCritical, east), // east has no routable instance
	))
	cat.Services[0].Instances[0].Weight = 3 // emr-1
	m := Build(Inputs{Catalog: cat, Defaults: DefaultDefaults(), TrustDomain: "medmesh.local"})
	got := m.Services[0].Localities
	want := []LocalityEndpoints{
		{Locality: Locality(north), Endpoints: []Endpoint{
			{InstanceID: "emr-1", Address: "10.0.0.1", Port: 8080, Weight: 3},
			{InstanceID: "emr-2", Address: "10.0.0.1", Port: 8080, Weight: 1, Degraded: true},
		}},
		{Locality: Locality(south), Endpoints: []Endpoint{
			{InstanceID: "emr-4", Address: "10.0.0.1", Port: 8080, Weight: 1},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("localities\n got %+v\nwant %+v", got, want)
	}
	// Critical instances stay in Instances: status pages and a recovering
	// instance's own inbound listener need them.
	if n := len(m.Services[0].Instances); n != 5 {
		t.Errorf("%d instances, want all 5", n)
	}
}

// Locality order is by region/zone/site whatever the catalog order, and an
// instance without locality forms its own (empty) group.
func TestBuildLocalityOrder(t *testing.T) {
	locs := []registry.Locality{{Region: "b"}, {}, {Region: "a", Zone: "z"}, {Region: "a", Zone: "y", Site: "s"}, {Region: "a", Zone: "y"}}
	var ins []registry.Instance
	for i, l := range locs {
		ins = append(ins, inst(string(rune('a'+i)), 8080, registry.HealthPassing, l))
	}
	cat := catalog(t, svc("emr", registry.KindEMR, registry.ProtocolHTTP, registry.LBRoundRobin, ins...))
	for range 5 { // Build groups through a map; order must not depend on it
		var got []Locality
		for _, le := range Build(Inputs{Catalog: cat, Defaults: DefaultDefaults(), TrustDomain: "medmesh.local"}).Services[0].Localities {
			got = append(got, le.Locality)
		}
		want := []Locality{{}, {Region: "a", Zone: "y"}, {Region: "a", Zone: "y", Site: "s"}, {Region: "a", Zone: "z"}, {Region: "b"}}
		if !slices.Equal(got, want) {
			t.Fatalf("localities %v, want %v", got, want)
		}
	}
}

func TestBuildLoadBalancer(t *testing.T) {
	tests := []struct {
		lb   registry.LBPolicy
		want LoadBalancer
	}{
		{registry.LBRoundRobin, LoadBalancer{Policy: LBRoundRobin}},
		{registry.LBLeastRequest, LoadBalancer{Policy: LBLeastRequest, ChoiceCount: 2}},
		{registry.LBRingHash, LoadBalancer{Policy: LBRingHash, MinRingSize: 1024, MaxRingSize: 8 * 1024 * 1024}},
		{registry.LBMaglev, LoadBalancer{Policy: LBMaglev}},
		{registry.LBRandom, LoadBalancer{Policy: LBRandom}},
	}
	for _, tt := range tests {
		cat := catalog(t, svc("s", registry.KindGeneric, registry.ProtocolHTTP, tt.lb, inst("s-1", 80, registry.HealthPassing, registry.Locality{})))
		if got := Build(Inputs{Catalog: cat, Defaults: DefaultDefaults(), TrustDomain: "medmesh.local"}).Services[0].LB; got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.lb, got, tt.want)
		}
	}
}

func TestCommonPort(t *testing.T) {
	ports := func(ps ...int) []registry.Instance {
		var out []registry.Instance
		for _, p := range ps {
			out = append(out, registry.Instance{Port: p})
		}
		return out
	}
	tests := []struct {
		name string
		in   []registry.Instance
		want int
	}{
		{"no instances", nil, 0},
		{"one", ports(2575), 2575},
		{"majority wins", ports(11112, 104, 104), 104},
		{"tie goes to the lowest", ports(9002, 9001, 9002, 9001), 9001},
		{"tie with a single each", ports(8443, 8080), 8080},
	}
	for _, tt := range tests {
		for range 5 { // commonPort walks a map
			if got := commonPort(tt.in); got != tt.want {
				t.Fatalf("%s: commonPort = %d, want %d", tt.name, got, tt.want)
			}
		}
	}
}

func TestMeshLookupAndSpiffeID(t *testing.T) {
	cat := catalog(t,
		svc("his", registry.KindHIS, registry.ProtocolHTTP, registry.LBRoundRobin, inst("his-1", 80, registry.HealthPassing, registry.Locality{})),
		svc("emr", registry.KindEMR, registry.ProtocolGRPC, registry.LBRoundRobin, inst("emr-1", 9001, registry.HealthPassing, registry.Locality{})),
	)
	cat.Services[0].Namespace = "clinical" // emr, after sorting
	m := Build(Inputs{Catalog: cat, Defaults: DefaultDefaults(), TrustDomain: "st-marys.medmesh.local"})
	if m.TrustDomain != "st-marys.medmesh.local" {
		t.Errorf("trust domain %q", m.TrustDomain)
	}
	s, ok := m.Service("emr")
	if !ok || s.Port != 9001 || s.Protocol != ProtocolGRPC || !s.PHI {
		t.Fatalf("Service(emr) = %+v, %t", s, ok)
	}
	if got, want := m.SpiffeID(s), "spiffe://st-marys.medmesh.local/ns/clinical/svc/emr"; got != want {
		t.Errorf("SpiffeID = %q, want %q", got, want)
	}
	his, _ := m.Service("his")
	if got, want := m.SpiffeID(his), "spiffe://st-marys.medmesh.local/ns/default/svc/his"; got != want {
		t.Errorf("SpiffeID = %q, want %q", got, want)
	}
	if _, ok := m.Service("pharmacy"); ok {
		t.Error("found a service that does not exist")
	}
}

// Consul accepts host names as addresses; Envoy rejects a whole endpoint
// assignment holding one, so such an instance is skipped with a warning
// and its healthy peers keep serving.
func TestBuildSkipsHostNameAddresses(t *testing.T) {
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		{ServiceName: "emr", ID: "emr-1", Address: "10.0.0.1", Port: 80, Health: registry.HealthPassing},
		{ServiceName: "emr", ID: "emr-2", Address: "emr-2.hospital.internal", Port: 80, Health: registry.HealthPassing},
	})
	m := Build(Inputs{Catalog: cat, Defaults: DefaultDefaults(), TrustDomain: "medmesh.local"})
	eps := m.Services[0].Localities[0].Endpoints
	if len(eps) != 1 || eps[0].InstanceID != "emr-1" {
		t.Fatalf("endpoints = %+v", eps)
	}
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], `"emr-2"`) || !strings.Contains(m.Warnings[0], "not an IP") {
		t.Fatalf("warnings = %q", m.Warnings)
	}
}
