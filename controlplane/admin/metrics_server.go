package admin

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewMetricsServer serves only the open routes (/healthz, /readyz,
// /metrics), for a port that a NetworkPolicy opens to Prometheus and the
// kubelet while the admin API stays closed to them. The handlers are the
// admin server's.
func NewMetricsServer(o Options) *http.Server {
	cp := &server{o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", cp.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cp.Gatherer, promhttp.HandlerOpts{}))
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
