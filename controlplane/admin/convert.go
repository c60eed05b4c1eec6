package admin

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "medmesh/api/admin"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/xds"
	"medmesh/registry"
)

// The admin API's JSON is built here, field by field, from the control
// plane's own types: the xDS tracker, the registry sources and the policy
// resolver may rename or reshape what they keep, and only these functions
// change with them, never what `medmesh status` and the UI read.

// adminProxy is one /debug/proxies row: the tracker's view of the proxy,
// the versions published for it (nil before the first publish) and its
// identity (a SPIFFE ID or why it has none).
func proxyRow(ps xds.ProxyStatus, published map[string]string, identity string) api.Proxy {
	p := api.Proxy{
		ID: ps.ID, Service: ps.Service, Kind: ps.Kind, Peer: ps.Peer, Transport: ps.Transport,
		ConnectedAt: ps.ConnectedAt, NACKs: ps.NACKs, Published: published, Identity: identity,
		TraceID:         ps.TraceID,
		ServerListeners: ps.ServerListeners,
	}
	if ps.Types != nil {
		p.Types = make(map[string]api.TypeStatus, len(ps.Types))
		for typ, ts := range ps.Types {
			p.Types[typ] = api.TypeStatus{Sent: ts.Sent, Acked: ts.Acked, AckedAt: ts.AckedAt}
		}
	}
	if n := ps.LastNACK; n != nil {
		p.LastNACK = &api.NACK{TypeURL: n.TypeURL, Version: n.Version, Message: n.Message, At: n.At}
	}
	return p
}

func sourceStatus(s registry.SourceStatus) api.SourceStatus {
	out := api.SourceStatus{
		Synced: s.Synced, Services: s.Services, LastError: s.LastError, LastErrorAt: s.LastErrorAt, LastChange: s.LastChange,
		HealthWatch: s.HealthWatch,
	}
	for _, p := range s.Peers {
		out.Peers = append(out.Peers, api.Peer{Name: p.Name, Site: p.Site, State: p.State, LastReceive: p.LastReceive,
			Imported: p.Imported, Instances: p.Instances, StaleSince: p.StaleSince, Withdrawn: p.Withdrawn})
	}
	return out
}

// adminObjectStatuses converts the resolver's statuses; never nil, so
// "objects" is [] rather than null.
func objectStatuses(in []policy.ObjectStatus) []api.ObjectStatus {
	out := make([]api.ObjectStatus, 0, len(in))
	for i := range in {
		out = append(out, objectStatus(&in[i]))
	}
	return out
}

func objectStatus(s *policy.ObjectStatus) api.ObjectStatus {
	o := api.ObjectStatus{
		Key:     api.Key{Kind: s.Kind, Namespace: s.Namespace, Name: s.Name},
		Service: s.Service, Generation: s.Generation, Source: s.Source,
	}
	if s.Conditions != nil {
		o.Conditions = make([]api.Condition, 0, len(s.Conditions))
		for _, c := range s.Conditions {
			o.Conditions = append(o.Conditions, condition(c))
		}
	}
	return o
}

// adminCondition keeps metav1's JSON: its Time is written in UTC to the
// second. (metav1 writes a zero time as null, this as year 1; the
// resolver always stamps one.)
func condition(c metav1.Condition) api.Condition {
	var at time.Time
	if !c.LastTransitionTime.IsZero() {
		at = c.LastTransitionTime.UTC().Truncate(time.Second)
	}
	return api.Condition{
		Type: c.Type, Status: string(c.Status), ObservedGeneration: c.ObservedGeneration,
		LastTransitionTime: at, Reason: c.Reason, Message: c.Message,
	}
}
