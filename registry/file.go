package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"medmesh/internal/latest"

	"sigs.k8s.io/yaml"
)

// FileCatalog is the YAML catalog format, for sites that run without Consul
// and for the embedded default.
//
//	services:
//	- name: emr
//	  kind: emr            # emr his imaging vitals webrtc generic
//	  protocol: grpc       # http http2 grpc tcp
//	  lb: least_request    # round_robin least_request ring_hash maglev random
//	  instances:
//	  - id: emr-1
//	    address: 10.0.0.5
//	    port: 9001
//	    health: passing    # passing warning critical
//	    locality: {region: north, zone: a, site: st-marys}
type FileCatalog struct {
	Services []FileService `json:"services"`
	// Intentions: [{source: his, destination: emr, allow: true}]
	Intentions []Intention `json:"intentions,omitempty"`
}

// FileService is one service in a catalog file.
type FileService struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Protocol  string `json:"protocol,omitempty"`
	PHI       *bool  `json:"phi,omitempty"`
	LB        string `json:"lb,omitempty"`
	MTLS      string `json:"mtls,omitempty"` // strict (default) or permissive
	// Scope is authorized (default) or explicit (meta medmesh-scope).
	Scope     string         `json:"scope,omitempty"`
	Instances []FileInstance `json:"instances"`
}

// FileInstance is one instance in a catalog file.
type FileInstance struct {
	ID       string   `json:"id"`
	Node     string   `json:"node,omitempty"`
	Address  string   `json:"address"`
	Port     int      `json:"port"`
	Health   string   `json:"health,omitempty"`
	Weight   int      `json:"weight,omitempty"`
	AppPort  int      `json:"appPort,omitempty"`
	Locality Locality `json:"locality,omitempty"`
	// Meta is free-form instance meta (route policies select subsets by
	// it, e.g. {version: v2}); medmesh-* keys are set by the fields above.
	Meta map[string]string `json:"meta,omitempty"`
}

// ParseCatalogFile parses and validates a YAML catalog. Errors name the
// file, the service and the field; unknown fields are errors, so a typo
// never silently becomes a default.
func ParseCatalogFile(name string, data []byte) (*Catalog, error) {
	fc, err := decodeCatalogFile(name, data)
	if err != nil {
		return nil, err
	}
	var errs []error
	var raw []RawInstance
	seenSvc := map[string]bool{}
	seenID := map[string]bool{}
	for i, s := range fc.Services {
		where := fmt.Sprintf("%s: services[%d]", name, i)
		if s.Name != "" {
			where = fmt.Sprintf("%s: service %q", name, s.Name)
		}
		fail := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s: %s", where, field, fmt.Sprintf(format, args...)))
		}
		if s.Name == "" {
			fail("name", "required")
		} else if seenSvc[s.Name] {
			fail("name", "duplicate service")
		}
		seenSvc[s.Name] = true
		meta := map[string]string{}
		check := func(field, key, v string, ok func(string) bool) {
			if v == "" {
				return
			}
			if !ok(v) {
				fail(field, "unknown value %q", v)
				return
			}
			meta[key] = v
		}
		check("kind", MetaKind, s.Kind, func(v string) bool { _, w := ParseMeta("", "", map[string]string{MetaKind: v}, nil); return w == nil })
		check("protocol", MetaProtocol, s.Protocol, func(v string) bool {
			_, w := ParseMeta("", "", map[string]string{MetaProtocol: v}, nil)
			return w == nil
		})
		check("lb", MetaLB, s.LB, func(v string) bool { _, w := ParseMeta("", "", map[string]string{MetaLB: v}, nil); return w == nil })
		if s.PHI != nil {
			meta[MetaPHI] = strconv.FormatBool(*s.PHI)
		}
		if s.Namespace != "" {
			meta[MetaNS] = s.Namespace
		}
		check("mtls", MetaMTLS, s.MTLS, func(v string) bool { return v == "strict" || v == "permissive" })
		check("scope", MetaScope, s.Scope, func(v string) bool { return v == ScopeAuthorized || v == ScopeExplicit })
		for j, in := range s.Instances {
			iw := fmt.Sprintf("instances[%d]", j)
			if in.ID == "" {
				fail(iw+".id", "required")
			} else if seenID[in.ID] {
				fail(iw+".id", "duplicate instance id %q", in.ID)
			}
			seenID[in.ID] = true
			if net.ParseIP(in.Address) == nil {
				fail(iw+".address", "%q is not an IP address", in.Address)
			}
			if in.Port <= 0 || in.Port > 65535 {
				fail(iw+".port", "%d is not a port", in.Port)
			}
			h := Health(in.Health)
			switch h {
			case "":
				h = HealthPassing
			case HealthPassing, HealthWarning, HealthCritical:
			default:
				fail(iw+".health", "unknown value %q", in.Health)
			}
			if in.Weight < 0 {
				fail(iw+".weight", "must not be negative")
			}
			if in.AppPort < 0 || in.AppPort > 65535 {
				fail(iw+".appPort", "%d is not a port", in.AppPort)
			}
			m := meta
			if in.AppPort != 0 || in.Locality != (Locality{}) || len(in.Meta) > 0 {
				m = map[string]string{}
				for k, v := range in.Meta {
					if strings.HasPrefix(k, "medmesh-") {
						fail(iw+".meta."+k, "medmesh-* keys are set by the instance's own fields")
					}
					m[k] = v
				}
				for k, v := range meta {
					m[k] = v
				}
				if in.AppPort != 0 {
					m[MetaAppPort] = strconv.Itoa(in.AppPort)
				}
				m[MetaRegion], m[MetaZone], m[MetaSite] = in.Locality.Region, in.Locality.Zone, in.Locality.Site
			}
			raw = append(raw, RawInstance{
				ServiceName: s.Name, ID: in.ID, Node: in.Node, Address: in.Address, Port: in.Port,
				Health: h, Weight: in.Weight, ServiceMeta: m,
			})
		}
	}
	for i, in := range fc.Intentions {
		if in.Source == "" || in.Destination == "" {
			errs = append(errs, fmt.Errorf("%s: intentions[%d]: source and destination are required", name, i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cat, _ := BuildCatalog(raw)
	cat.Intentions = fc.Intentions
	cat.normalize()
	return cat, nil
}

// decodeCatalogFile decodes strictly one service at a time, so that an
// unknown or mistyped field is reported with the service it is in, not
// only with the file.
func decodeCatalogFile(name string, data []byte) (FileCatalog, error) {
	var top struct {
		Services   []json.RawMessage `json:"services"`
		Intentions []Intention       `json:"intentions,omitempty"`
	}
	if err := yaml.UnmarshalStrict(data, &top); err != nil {
		return FileCatalog{}, fmt.Errorf("%s: %w", name, err)
	}
	fc := FileCatalog{Services: make([]FileService, len(top.Services)), Intentions: top.Intentions}
	var errs []error
	for i, raw := range top.Services {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc.Services[i]); err != nil {
			var named struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(raw, &named) // best effort: only for the message
			where := fmt.Sprintf("services[%d]", i)
			if named.Name != "" {
				where = fmt.Sprintf("service %q", named.Name)
			}
			errs = append(errs, fmt.Errorf("%s: %s: %w", name, where, err))
		}
	}
	return fc, errors.Join(errs...)
}

// File is a catalog source backed by a YAML file. It polls the file (edge
// nodes run without inotify-friendly volumes often enough that polling is
// the dependable choice) and keeps the last valid catalog when an edit is
// invalid.
type File struct {
	Path     string
	Interval time.Duration
	Logger   *slog.Logger

	mu     sync.Mutex
	status SourceStatus
}

// Name identifies the source in logs and status.
func (f *File) Name() string { return "file:" + f.Path }

// Status returns the source's current status.
func (f *File) Status() SourceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// Run reads the file now and on every change until ctx ends.
func (f *File) Run(ctx context.Context, out chan *Catalog) error {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := f.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var last []byte
	for {
		data, err := os.ReadFile(f.Path)
		if err == nil && !bytes.Equal(data, last) {
			var cat *Catalog
			cat, err = ParseCatalogFile(f.Path, data)
			if err == nil {
				last = data
				latest.Send(out, cat)
				f.mu.Lock()
				f.status = SourceStatus{Synced: true, Services: len(cat.Services), LastChange: time.Now()}
				f.mu.Unlock()
			} else {
				last = data // report a bad edit once, not every poll
			}
		}
		if err != nil {
			log.Error("catalog file rejected; keeping the last valid catalog", "err", err)
			f.mu.Lock()
			f.status.LastError, f.status.LastErrorAt = err.Error(), time.Now()
			f.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
