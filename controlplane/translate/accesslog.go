package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"medmesh/api/wire"
)

// accessLogFields is the JSON access log line of Envoy sidecars. It names
// who called whom, how it went and what kind of data it was, never the
// path, query, headers or bodies: a FHIR path carries a patient's ID, so
// the PHI tags (dynamic metadata set by the PHI extension, namespace
// wire.MetadataNamespace) stand in for it. A caller-supplied x-request-id is
// left out too: it is free text from outside.
var accessLogFields = map[string]string{
	"start_time":  "%START_TIME%",
	"method":      "%REQ(:METHOD)%",
	"protocol":    "%PROTOCOL%",
	"status":      "%RESPONSE_CODE%",
	"grpc_status": "%GRPC_STATUS%",
	"flags":       "%RESPONSE_FLAGS%",
	"duration_ms": "%DURATION%",
	"bytes_in":    "%BYTES_RECEIVED%",
	"bytes_out":   "%BYTES_SENT%",
	"route":       "%ROUTE_NAME%",
	"upstream":    "%UPSTREAM_CLUSTER%",
	"caller":      "%DOWNSTREAM_PEER_URI_SAN%",
	"phi":         "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataPHI + ")%",
	"priority":    "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataPriority + ")%",
	"class":       "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataClass + ")%",
}

// accessLogs is the access log of an Envoy sidecar's connection manager:
// JSON lines on stdout, where the platform's log shipper collects them.
func accessLogs() []*accesslogv3.AccessLog {
	fields := make(map[string]any, len(accessLogFields))
	for k, v := range accessLogFields {
		fields[k] = v
	}
	format, err := structpb.NewStruct(fields)
	if err != nil {
		panic(err) // the fields are constants
	}
	return []*accesslogv3.AccessLog{{
		Name: "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&streamv3.StdoutAccessLog{
			AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: format},
			}},
		})},
	}}
}
