package nurse

import (
	"context"
	_ "embed"
	"errors"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"medmesh/examples/vitals/frame"
)

//go:embed page.html
var page []byte

// Handler serves the nurse station's page at / and its frames at /ws: a
// WebSocket on which every delivered frame is one binary message, the
// device handle's length (one byte) and the handle, then the encoded
// frame exactly as the device sent it (docs/vitals-frames.md), so the
// page checks the same CRC the services do.
func (s *Station) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
	mux.HandleFunc("GET /ws", s.serveWS)
	return mux
}

func (s *Station) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil) // same origin only (the default)
	if err != nil {
		return // Accept has answered the request
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context()) // the page sends nothing; this notices it leave
	frames := make(chan Delivered, 1024)
	cancel := s.Subscribe(frames)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-frames:
			msg, err := wsMessage(d)
			if err != nil {
				continue
			}
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			err = c.Write(wctx, websocket.MessageBinary, msg)
			wcancel()
			if err != nil {
				return
			}
		}
	}
}

// wsMessage is one frame for the page: handle length, handle, frame.
func wsMessage(d Delivered) ([]byte, error) {
	if len(d.Device) > 255 {
		return nil, errors.New("device handle longer than 255 bytes")
	}
	msg := append(make([]byte, 0, 1+len(d.Device)+frame.Overhead+len(d.Frame.Payload)), byte(len(d.Device)))
	msg = append(msg, d.Device...)
	return frame.Append(msg, d.Frame)
}

// ParseWSMessage splits a /ws message into the device handle and the
// encoded frame (for tests and Go clients).
func ParseWSMessage(msg []byte) (device string, raw []byte, err error) {
	if len(msg) < 1 || len(msg) < 1+int(msg[0]) {
		return "", nil, errors.New("short message")
	}
	n := int(msg[0])
	return string(msg[1 : 1+n]), msg[1+n:], nil
}
