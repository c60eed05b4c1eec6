package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Transport sockets come from this file only: every upstream cluster asks
// upstreamTransportSocket and every inbound filter chain asks
// downstreamTransportSocket. With mTLS on, Envoy gets its SVID and the
// trust bundle as SDS secrets (so a rotation changes only secrets) and
// proxyless gRPC gets references to the certificate provider instance its
// bootstrap names (files kept fresh by `medmesh sidecar --svid-dir`).

// upstreamTransportSocket secures a proxy's connections to a service and
// checks that the peer is exactly that service's SPIFFE ID: at this site,
// or at another site whose instances are routed here.
func upstreamTransportSocket(m *ir.Mesh, s *ir.Service, kind wire.ProxyKind) *corev3.TransportSocket {
	if !m.MTLS {
		return nil
	}
	var sans []*matcherv3.StringMatcher
	for _, id := range m.SpiffeIDs(s) {
		sans = append(sans, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}})
	}
	return tlsSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(kind, sans...), Sni: s.Name})
}

// downstreamTransportSocket makes a service accept only mTLS from
// workloads of the trust domain; which of them may call is authorization,
// decided per caller identity after the handshake.
func downstreamTransportSocket(m *ir.Mesh, _ *ir.Service, kind wire.ProxyKind) *corev3.TransportSocket {
	if !m.MTLS {
		return nil
	}
	return tlsSocket(&tlsv3.DownstreamTlsContext{
		CommonTlsContext:         commonTLS(kind),
		RequireClientCertificate: wrapBool(true),
	})
}

func commonTLS(kind wire.ProxyKind, sans ...*matcherv3.StringMatcher) *tlsv3.CommonTlsContext {
	if kind == wire.ProxyProxyless {
		provider := &tlsv3.CertificateProviderPluginInstance{InstanceName: wire.CertProviderInstance, CertificateName: "default"}
		vc := &tlsv3.CertificateValidationContext{CaCertificateProviderInstance: provider}
		if len(sans) > 0 {
			vc.MatchSubjectAltNames = sans
		}
		return &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: provider,
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
		}
	}
	def := &tlsv3.CertificateValidationContext{}
	for _, san := range sans {
		def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames,
			&tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: san})
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: wire.SVIDSecret, SdsConfig: adsSource()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: wire.BundleSecret, SdsConfig: adsSource()},
			},
		},
	}
}

func tlsSocket(ctx proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// secrets are an Envoy proxy's SDS secrets: its SVID and the bundle.
func secrets(m *ir.Mesh, p *ir.Proxy, svid *ir.Identity) []*tlsv3.Secret {
	if !m.MTLS || p.Kind == wire.ProxyProxyless || svid == nil {
		return nil
	}
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return []*tlsv3.Secret{
		{Name: wire.SVIDSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(svid.CertChain), PrivateKey: inline(svid.PrivateKey),
		}}},
		{Name: wire.BundleSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(m.BundlePEM),
		}}},
	}
}
