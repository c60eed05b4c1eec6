package registry_test

import (
	"reflect"
	"strings"
	"testing"

	"medmesh/registry"
)

func TestParseMeta(t *testing.T) {
	defaults := registry.Settings{
		Kind: registry.KindGeneric, Protocol: registry.ProtocolHTTP, LB: registry.LBRoundRobin, Namespace: "default",
	}
	with := func(f func(*registry.Settings)) registry.Settings {
		s := defaults
		f(&s)
		return s
	}
	tests := []struct {
		name     string
		svc      map[string]string
		node     map[string]string
		want     registry.Settings
		wantWarn []registry.Warning // Service "emr", Instance "emr-1" filled in below
	}{
		{name: "no meta", want: defaults},
		{name: "unrelated meta is ignored", svc: map[string]string{"version": "2.1", "medmesh-other": "x"}, want: defaults},

		// Every kind; PHI defaults to true for the clinical ones.
		{name: "kind emr", svc: map[string]string{"medmesh-kind": "emr"}, want: with(func(s *registry.Settings) { s.Kind, s.PHI = registry.KindEMR, true })},
		{name: "kind his", svc: map[string]string{"medmesh-kind": "his"}, want: with(func(s *registry.Settings) { s.Kind, s.PHI = registry.KindHIS, true })},
		{name: "kind imaging", svc: map[string]string{"medmesh-kind": "imaging"}, want: with(func(s *registry.Settings) { s.Kind, s.PHI = registry.KindImaging, true })},
		{name: "kind vitals", svc: map[string]string{"medmesh-kind": "vitals"}, want: with(func(s *registry.Settings) { s.Kind, s.PHI = registry.KindVitals, true })},
		{name: "kind webrtc", svc: map[string]string{"medmesh-kind": "webrtc"}, want: with(func(s *registry.Settings) { s.Kind = registry.KindWebRTC })},
		{name: "kind generic", svc: map[string]string{"medmesh-kind": "generic"}, want: defaults},

		{name: "protocol http", svc: map[string]string{"medmesh-protocol": "http"}, want: defaults},
		{name: "protocol http2", svc: map[string]string{"medmesh-protocol": "http2"}, want: with(func(s *registry.Settings) { s.Protocol = registry.ProtocolHTTP2 })},
		{name: "protocol grpc", svc: map[string]string{"medmesh-protocol": "grpc"}, want: with(func(s *registry.Settings) { s.Protocol = registry.ProtocolGRPC })},
		{name: "protocol tcp", svc: map[string]string{"medmesh-protocol": "tcp"}, want: with(func(s *registry.Settings) { s.Protocol = registry.ProtocolTCP })},

		{name: "phi false overrides the emr default", svc: map[string]string{"medmesh-kind": "emr", "medmesh-phi": "false"},
			want: with(func(s *registry.Settings) { s.Kind = registry.KindEMR })},
		{name: "phi true on a generic service", svc: map[string]string{"medmesh-phi": "true"},
			want: with(func(s *registry.Settings) { s.PHI = true })},

		{name: "lb round_robin", svc: map[string]string{"medmesh-lb": "round_robin"}, want: defaults},
		{name: "lb least_request", svc: map[string]string{"medmesh-lb": "least_request"}, want: with(func(s *registry.Settings) { s.LB = registry.LBLeastRequest })},
		{name: "lb ring_hash", svc: map[string]string{"medmesh-lb": "ring_hash"}, want: with(func(s *registry.Settings) { s.LB = registry.LBRingHash })},
		{name: "lb maglev", svc: map[string]string{"medmesh-lb": "maglev"}, want: with(func(s *registry.Settings) { s.LB = registry.LBMaglev })},
		{name: "lb random", svc: map[string]string{"medmesh-lb": "random"}, want: with(func(s *registry.Settings) { s.LB = registry.LBRandom })},

		{name: "namespace", svc: map[string]string{"medmesh-namespace": "cardiology"}, want: with(func(s *registry.Settings) { s.Namespace = "cardiology" })},
		{name: "empty namespace is the default", svc: map[string]string{"medmesh-namespace": ""}, want: defaults},
		{name: "app port", svc: map[string]string{"medmesh-app-port": "8081"}, want: with(func(s *registry.Settings) { s.AppPort = 8081 })},

		{name: "locality from service meta",
			svc: map[string]string{"medmesh-region": "north", "medmesh-zone": "north-a", "medmesh-site": "st-marys"},
			want: with(func(s *registry.Settings) {
				s.Locality = registry.Locality{Region: "north", Zone: "north-a", Site: "st-marys"}
			})},
		{name: "locality from node meta",
			node: map[string]string{"medmesh-region": "south", "medmesh-zone": "south-b", "medmesh-site": "riverside"},
			want: with(func(s *registry.Settings) {
				s.Locality = registry.Locality{Region: "south", Zone: "south-b", Site: "riverside"}
			})},
		// Service meta wins key by key: the instance may sit in another zone
		// than its node agent claims.
		{name: "service meta wins over node meta per key",
			svc:  map[string]string{"medmesh-zone": "north-b", "medmesh-site": ""},
			node: map[string]string{"medmesh-region": "north", "medmesh-zone": "north-a", "medmesh-site": "st-marys"},
			want: with(func(s *registry.Settings) {
				s.Locality = registry.Locality{Region: "north", Zone: "north-b", Site: "st-marys"}
			})},
		{name: "node meta does not set kind", node: map[string]string{"medmesh-kind": "emr"}, want: defaults},

		// Unknown values: documented default plus a warning; never dropped.
		{name: "unknown kind", svc: map[string]string{"medmesh-kind": "dental"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-kind", Value: "dental", Used: "generic"}}},
		{name: "unknown protocol", svc: map[string]string{"medmesh-protocol": "udp"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-protocol", Value: "udp", Used: "http"}}},
		{name: "kinds are case sensitive", svc: map[string]string{"medmesh-kind": "EMR"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-kind", Value: "EMR", Used: "generic"}}},
		{name: "unknown phi uses the kind's default", svc: map[string]string{"medmesh-kind": "emr", "medmesh-phi": "yes"},
			want:     with(func(s *registry.Settings) { s.Kind, s.PHI = registry.KindEMR, true }),
			wantWarn: []registry.Warning{{Key: "medmesh-phi", Value: "yes", Used: "true"}}},
		{name: "unknown lb", svc: map[string]string{"medmesh-lb": "fastest"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-lb", Value: "fastest", Used: "round_robin"}}},
		{name: "app port not a number", svc: map[string]string{"medmesh-app-port": "http"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-app-port", Value: "http", Used: "instance port"}}},
		{name: "app port zero", svc: map[string]string{"medmesh-app-port": "0"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-app-port", Value: "0", Used: "instance port"}}},
		{name: "app port too large", svc: map[string]string{"medmesh-app-port": "65536"}, want: defaults,
			wantWarn: []registry.Warning{{Key: "medmesh-app-port", Value: "65536", Used: "instance port"}}},
		{name: "every bad key warns, good keys still apply",
			svc:  map[string]string{"medmesh-kind": "dental", "medmesh-protocol": "grpc", "medmesh-lb": "fastest", "medmesh-phi": "maybe"},
			want: with(func(s *registry.Settings) { s.Protocol = registry.ProtocolGRPC }),
			wantWarn: []registry.Warning{
				{Key: "medmesh-kind", Value: "dental", Used: "generic"},
				{Key: "medmesh-phi", Value: "maybe", Used: "false"},
				{Key: "medmesh-lb", Value: "fastest", Used: "round_robin"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns := registry.ParseMeta("emr", "emr-1", tt.svc, tt.node)
			if got != tt.want {
				t.Errorf("settings\n got %+v\nwant %+v", got, tt.want)
			}
			for i := range tt.wantWarn {
				tt.wantWarn[i].Service, tt.wantWarn[i].Instance = "emr", "emr-1"
			}
			if !reflect.DeepEqual(warns, tt.wantWarn) {
				t.Errorf("warnings\n got %+v\nwant %+v", warns, tt.wantWarn)
			}
		})
	}
}

// An operator reads the warning in a log line: it must say which service,
// which instance and which key, and what was used instead.
func TestWarningString(t *testing.T) {
	_, warns := registry.ParseMeta("emr", "emr-7", map[string]string{"medmesh-lb": "fastest"}, nil)
	if len(warns) != 1 {
		t.Fatalf("warnings %v", warns)
	}
	s := warns[0].String()
	for _, want := range []string{`"emr"`, `"emr-7"`, `"medmesh-lb"`, `"fastest"`, `"round_robin"`} {
		if !strings.Contains(s, want) {
			t.Errorf("%q does not contain %s", s, want)
		}
	}
}

func TestDefaultPHI(t *testing.T) {
	want := map[registry.Kind]bool{
		registry.KindEMR: true, registry.KindHIS: true, registry.KindImaging: true, registry.KindVitals: true,
		registry.KindWebRTC: false, registry.KindGeneric: false, "unknown": false,
	}
	for k, w := range want {
		if got := registry.DefaultPHI(k); got != w {
			t.Errorf("DefaultPHI(%q) = %t, want %t", k, got, w)
		}
	}
}

// Permissive mTLS is a migration aid for non-PHI services only.
func TestMetaMTLSMode(t *testing.T) {
	s, w := registry.ParseMeta("scheduling", "s-1", map[string]string{registry.MetaMTLS: "permissive"}, nil)
	if !s.Permissive || len(w) != 0 {
		t.Fatalf("non-PHI permissive: %+v %v", s, w)
	}
	s, w = registry.ParseMeta("emr", "emr-1", map[string]string{registry.MetaKind: "emr", registry.MetaMTLS: "permissive"}, nil)
	if s.Permissive || len(w) != 1 || w[0].Key != registry.MetaMTLS || !strings.Contains(w[0].Used, "PHI") {
		t.Fatalf("PHI permissive must stay strict with a warning: %+v %v", s, w)
	}
	s, w = registry.ParseMeta("x", "x-1", map[string]string{registry.MetaMTLS: "sometimes"}, nil)
	if s.Permissive || len(w) != 1 {
		t.Fatalf("unknown mode: %+v %v", s, w)
	}
}

// medmesh-scope narrows a caller's configuration; an unknown value keeps
// the default and says so, naming the key.
func TestMetaScope(t *testing.T) {
	s, w := registry.ParseMeta("nurse", "nurse-1", map[string]string{registry.MetaScope: "explicit"}, nil)
	if !s.ExplicitScope || len(w) != 0 {
		t.Fatalf("explicit: %+v %v", s, w)
	}
	s, w = registry.ParseMeta("nurse", "nurse-1", map[string]string{registry.MetaScope: "narrow"}, nil)
	if s.ExplicitScope || len(w) != 1 || w[0].Key != registry.MetaScope || w[0].Used != registry.ScopeAuthorized {
		t.Fatalf("unknown value: %+v %v", s, w)
	}
	cat, err := registry.ParseCatalogFile("c.yaml", []byte("services:\n- name: nurse\n  scope: explicit\n  instances: [{id: n-1, address: 10.0.0.1, port: 80}]\n"))
	if err != nil || !cat.Services[0].ExplicitScope {
		t.Fatalf("catalog file scope: %v %+v", err, cat)
	}
	if _, err := registry.ParseCatalogFile("c.yaml", []byte("services:\n- name: nurse\n  scope: narrow\n  instances: [{id: n-1, address: 10.0.0.1, port: 80}]\n")); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Fatalf("catalog file with an unknown scope: %v", err)
	}
}
