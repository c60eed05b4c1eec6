package signal

import (
	"context"
	"embed"
	"io"
	"io/fs"
	"net/http"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

//go:embed page
var page embed.FS

// maxMessage bounds one WebSocket message: an SDP with every codec a
// browser offers is well under 16 KiB.
const maxMessage = 64 << 10

// Handler is the browser door: the call page at / and the signalling
// WebSocket at /ws. Browsers are not mesh workloads; they join only calls
// a mesh caller opened, with its invite. Serve it behind the hospital's
// patient portal (HTTPS, patient login): this handler authenticates no
// person.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(page, "page")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /ws", s.serveWebSocket)
	return securityHeaders(mux)
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	// Same-origin only (the default): the page is served from here.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request
	}
	c.SetReadLimit(maxMessage)
	err = s.Serve(r.Context(), wsConn{c}, Caller{ID: "browser", Site: s.opts.Site, Door: "websocket"})
	if err != nil {
		c.Close(websocket.StatusPolicyViolation, "signalling session ended")
		return
	}
	c.Close(websocket.StatusNormalClosure, "")
}

type wsConn struct{ c *websocket.Conn }

func (w wsConn) Send(ctx context.Context, m Message) error { return wsjson.Write(ctx, w.c, m) }

func (w wsConn) Recv(ctx context.Context) (Message, error) {
	var m Message
	err := wsjson.Read(ctx, w.c, &m)
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		// The page hung up or was closed: the party left.
		return m, io.EOF
	}
	return m, err
}

// securityHeaders keeps the page from being framed or from loading
// anything but its own script.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
