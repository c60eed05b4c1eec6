package registry

import (
	"fmt"
	"strconv"
)

// Service and node meta keys (CONTRACT.md, "Registry conventions").
const (
	MetaKind     = "medmesh-kind"
	MetaProtocol = "medmesh-protocol"
	MetaPHI      = "medmesh-phi"
	MetaLB       = "medmesh-lb"
	MetaRegion   = "medmesh-region"
	MetaZone     = "medmesh-zone"
	MetaSite     = "medmesh-site"
	MetaAppPort  = "medmesh-app-port"
	// MetaMTLS is "strict" (default) or "permissive": a non-PHI service
	// may accept plaintext as well as mTLS while its callers migrate.
	MetaMTLS = "medmesh-mtls"
	MetaNS   = "medmesh-namespace"
	// MetaScope narrows what a service's proxies are sent: "authorized"
	// (default) is every service its authorization lets it call, PHI ones
	// only where an intention or MeshAccess allows it and every
	// default-allow one; "explicit" drops the default-allow services no
	// intention or MeshAccess names it as a caller of (Istio's Sidecar
	// egress, from the authorization an operator already writes).
	MetaScope = "medmesh-scope"
)

// Scope values of MetaScope.
const (
	ScopeAuthorized = "authorized"
	ScopeExplicit   = "explicit"
)

// Warning describes meta that could not be used; the instance is still
// served, with the default for that key.
type Warning struct {
	Service  string
	Instance string
	Key      string
	Value    string
	Used     string
}

func (w Warning) String() string {
	return fmt.Sprintf("service %q instance %q: unknown value %q for meta %q, using %q",
		w.Service, w.Instance, w.Value, w.Key, w.Used)
}

// Settings is what service meta says about one instance.
type Settings struct {
	Kind      Kind
	Protocol  Protocol
	PHI       bool
	LB        LBPolicy
	Namespace string
	Locality  Locality
	AppPort   int
	// Permissive accepts plaintext beside mTLS (never for PHI).
	Permissive bool
	// ExplicitScope: MetaScope is "explicit".
	ExplicitScope bool
}

// ParseMeta maps service meta (and node meta for locality) to settings.
// Unknown values fall back to the documented default and produce a Warning
// naming the service, the instance and the key; they never drop the
// instance, because a typo in meta must not take a clinical service offline.
func ParseMeta(service, instance string, svcMeta, nodeMeta map[string]string) (Settings, []Warning) {
	var warns []Warning
	warn := func(key, used string) {
		warns = append(warns, Warning{Service: service, Instance: instance, Key: key, Value: svcMeta[key], Used: used})
	}
	s := Settings{Kind: KindGeneric, Protocol: ProtocolHTTP, LB: LBRoundRobin, Namespace: "default"}

	if v, ok := svcMeta[MetaKind]; ok {
		switch k := Kind(v); k {
		case KindEMR, KindHIS, KindImaging, KindVitals, KindWebRTC, KindGeneric:
			s.Kind = k
		default:
			warn(MetaKind, string(KindGeneric))
		}
	}
	if v, ok := svcMeta[MetaProtocol]; ok {
		switch p := Protocol(v); p {
		case ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP:
			s.Protocol = p
		default:
			warn(MetaProtocol, string(ProtocolHTTP))
		}
	}
	s.PHI = DefaultPHI(s.Kind)
	if v, ok := svcMeta[MetaPHI]; ok {
		switch v {
		case "true":
			s.PHI = true
		case "false":
			s.PHI = false
		default:
			warn(MetaPHI, strconv.FormatBool(s.PHI))
		}
	}
	if v, ok := svcMeta[MetaLB]; ok {
		switch l := LBPolicy(v); l {
		case LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom:
			s.LB = l
		default:
			warn(MetaLB, string(LBRoundRobin))
		}
	}
	if v := svcMeta[MetaNS]; v != "" {
		s.Namespace = v
	}
	if v, ok := svcMeta[MetaMTLS]; ok {
		switch {
		case v == "strict":
		case v == "permissive" && !s.PHI:
			s.Permissive = true
		case v == "permissive":
			// PHI crosses a hop only encrypted: refuse, loudly.
			warns = append(warns, Warning{Service: service, Instance: instance, Key: MetaMTLS, Value: v,
				Used: "strict (a PHI service accepts no plaintext)"})
		default:
			warn(MetaMTLS, "strict")
		}
	}
	if v, ok := svcMeta[MetaScope]; ok {
		switch v {
		case ScopeAuthorized:
		case ScopeExplicit:
			s.ExplicitScope = true
		default:
			warn(MetaScope, ScopeAuthorized)
		}
	}
	if v, ok := svcMeta[MetaAppPort]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			warn(MetaAppPort, "instance port")
		} else {
			s.AppPort = p
		}
	}
	// Service meta wins over node meta: an instance may sit in a different
	// zone than the node agent claims (e.g. a VM moved between racks).
	pick := func(key string) string {
		if v := svcMeta[key]; v != "" {
			return v
		}
		return nodeMeta[key]
	}
	s.Locality = Locality{Region: pick(MetaRegion), Zone: pick(MetaZone), Site: pick(MetaSite)}
	return s, warns
}

// DefaultPHI is the CONTRACT.md default for `medmesh-phi`: clinical kinds
// carry PHI unless the registration says otherwise.
func DefaultPHI(k Kind) bool {
	switch k {
	case KindEMR, KindHIS, KindImaging, KindVitals:
		return true
	}
	return false
}
