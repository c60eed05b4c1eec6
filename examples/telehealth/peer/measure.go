package peer

import (
	"context"

	"medmesh/examples/telehealth/signal"
)

// Dialer opens a signalling stream (signal.Dial on a mesh connection).
type Dialer func(ctx context.Context) (signal.ClientConn, error)
