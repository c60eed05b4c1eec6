// Package bootstrap writes the bootstrap configuration a data plane needs
// to find the control plane: an Envoy bootstrap (YAML), or a gRPC xDS
// bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) for proxyless services.
package bootstrap

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"medmesh/api/wire"
	"medmesh/certs"
)

// Options describe the proxy being bootstrapped.
type Options struct {
	XDSAddress string // host:port of the control plane
	NodeID     string // Consul service ID of the instance (Envoy)
	Service    string // service name (node.cluster)
	// Delta selects incremental xDS for Envoy (the default in medmesh);
	// false selects state-of-the-world.
	Delta bool
	// AdminPort is Envoy's admin port, bound on loopback only.
	AdminPort int
	// JoinToken or ConsulToken proves the proxy's identity (Envoy: sent
	// as gRPC metadata on its xDS stream).
	JoinToken   string
	ConsulToken string
	// SVIDDir is where proxyless services find their certificates, and
	// SVIDRefresh how often grpc-go re-reads them (default 60s; it must be
	// well under half the SVID lifetime).
	SVIDDir     string
	SVIDRefresh time.Duration
}

const xdsClusterName = "medmesh_xds"

// Envoy returns a validated Envoy bootstrap as YAML.
func Envoy(o Options) ([]byte, error) {
	host, port, err := splitHostPort(o.XDSAddress)
	if err != nil {
		return nil, err
	}
	if o.NodeID == "" {
		return nil, fmt.Errorf("bootstrap: --node-id is required (the Consul service ID of the instance)")
	}
	if o.AdminPort == 0 {
		o.AdminPort = wire.EnvoyAdminPort
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id: o.NodeID, Cluster: o.Service,
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				wire.NodeMetaProxyKind: structpb.NewStringValue(string(wire.ProxyEnvoy)),
			}},
		},
		Admin: &bootstrapv3.Admin{Address: socket("127.0.0.1", o.AdminPort)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
			Name:                 xdsClusterName,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
			ConnectTimeout:       durationpb.New(2e9),
			// xDS is gRPC: HTTP/2 to the control plane.
			TypedExtensionProtocolOptions: http2Options(),
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: xdsClusterName,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket(host, port)}},
				}}}},
			},
		}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName},
				}, InitialMetadata: proofMetadata(o)}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	js, err := protojson.Marshal(b)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// CertProviderName is the certificate provider instance proxyless TLS
// contexts refer to.
const CertProviderName = wire.CertProviderInstance

// GRPCBootstrap is the gRPC xDS bootstrap file format (gRFC A27 and
// later), written so that every gRPC implementation's parser accepts it:
// grpc-go's, grpc-js-xds's (the strictest: it requires node.locality) and
// the C++ core's and grpc-java's, which take the same fields.
type GRPCBootstrap struct {
	XDSServers                         []GRPCXDSServer             `json:"xds_servers"`
	Node                               GRPCNode                    `json:"node"`
	ServerListenerResourceNameTemplate string                      `json:"server_listener_resource_name_template"`
	CertificateProviders               map[string]GRPCCertProvider `json:"certificate_providers,omitempty"`
}

// GRPCXDSServer is one management server entry.
type GRPCXDSServer struct {
	ServerURI      string           `json:"server_uri"`
	ChannelCreds   []map[string]any `json:"channel_creds"`
	ServerFeatures []string         `json:"server_features"`
}

// GRPCNode is the node identity a proxyless client presents.
type GRPCNode struct {
	ID      string `json:"id"`
	Cluster string `json:"cluster,omitempty"`
	// Locality is always written, empty when unknown: grpc-js-xds refuses
	// a node without it ("locality field missing in node element", which
	// its callers only ever see as a failed name resolution). medmesh
	// takes localities from the registry, never from a proxy, so an empty
	// one loses nothing.
	Locality GRPCLocality      `json:"locality"`
	Metadata map[string]string `json:"metadata"`
}

// GRPCLocality is the xDS node locality (envoy.config.core.v3.Locality).
type GRPCLocality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"sub_zone,omitempty"`
}

// GRPCCertProvider is a certificate provider plugin instance.
type GRPCCertProvider struct {
	PluginName string         `json:"plugin_name"`
	Config     map[string]any `json:"config"`
}

// SVID file names inside an SVID directory.
const (
	SVIDCertFile   = certs.SVIDCertFile
	SVIDKeyFile    = certs.SVIDKeyFile
	SVIDBundleFile = certs.SVIDBundleFile
)

// Proxyless returns a gRPC xDS bootstrap as indented JSON.
func Proxyless(o Options) ([]byte, error) {
	if _, _, err := splitHostPort(o.XDSAddress); err != nil {
		return nil, err
	}
	if o.NodeID == "" {
		return nil, fmt.Errorf("bootstrap: --node-id is required")
	}
	b := GRPCBootstrap{
		XDSServers: []GRPCXDSServer{{
			ServerURI:    o.XDSAddress,
			ChannelCreds: []map[string]any{{"type": "insecure"}},
			// xds_v3 is implied by current grpc-go; ignore_resource_deletion
			// keeps serving the last resource if the control plane loses
			// it, the last-known-good rule applied on the client side.
			ServerFeatures: []string{"xds_v3", "ignore_resource_deletion"},
		}},
		Node: GRPCNode{ID: o.NodeID, Cluster: o.Service, Metadata: map[string]string{
			wire.NodeMetaProxyKind: string(wire.ProxyProxyless),
		}},
		ServerListenerResourceNameTemplate: wire.ProxylessServerListenerPrefix + "%s",
	}
	refresh := o.SVIDRefresh
	if refresh <= 0 {
		refresh = time.Minute
	}
	if o.SVIDDir != "" {
		b.CertificateProviders = map[string]GRPCCertProvider{CertProviderName: {
			PluginName: "file_watcher",
			Config: map[string]any{
				"certificate_file":    filepath.Join(o.SVIDDir, SVIDCertFile),
				"private_key_file":    filepath.Join(o.SVIDDir, SVIDKeyFile),
				"ca_certificate_file": filepath.Join(o.SVIDDir, SVIDBundleFile),
				"refresh_interval":    fmt.Sprintf("%gs", refresh.Seconds()), // protobuf JSON duration
			},
		}}
	}
	return json.MarshalIndent(b, "", "  ")
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("bootstrap: --xds-address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bootstrap: --xds-address %q: bad port", addr)
	}
	return host, port, nil
}

func socket(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func proofMetadata(o Options) []*corev3.HeaderValue {
	switch {
	case o.ConsulToken != "":
		return []*corev3.HeaderValue{{Key: wire.ConsulACLHeader, Value: o.ConsulToken}}
	case o.JoinToken != "":
		return []*corev3.HeaderValue{{Key: wire.JoinTokenHeader, Value: o.JoinToken}}
	}
	return nil
}

// http2Options makes the xDS cluster speak HTTP/2 (xDS is gRPC). Written
// here rather than taken from translate so that services building their
// own bootstrap with this package link none of the translator.
func http2Options() map[string]*anypb.Any {
	opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					// Envoy sends no HTTP/2 PING unless told to: a control
					// plane that vanished without closing the connection
					// (a host lost, a NAT entry expired) would leave it
					// waiting on a dead ADS stream, never reconnecting. The
					// control plane permits pings every 10 s or more.
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
						Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(10 * time.Second),
					}},
				},
			},
		},
	})
	if err != nil {
		panic(err) // a static, well-formed message always marshals
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
}
