package peer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs hands pion's scoped loggers a party's logger, at debug level
// whatever pion's own level: pion's messages may quote addresses,
// candidates or pieces of a session description, so they stay out of
// the log a party keeps at info and above (and out of stderr, where
// pion's default logger writes).
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) debug(level, msg string) { l.log.Debug(msg, "pion_level", level) }

func (l pionLogger) debugf(level, format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.debug(level, fmt.Sprintf(format, args...))
	}
}

func (pionLogger) Trace(string)          {}
func (pionLogger) Tracef(string, ...any) {}

func (l pionLogger) Debug(msg string)               { l.debug("debug", msg) }
func (l pionLogger) Debugf(format string, a ...any) { l.debugf("debug", format, a...) }
func (l pionLogger) Info(msg string)                { l.debug("info", msg) }
func (l pionLogger) Infof(format string, a ...any)  { l.debugf("info", format, a...) }
func (l pionLogger) Warn(msg string)                { l.debug("warn", msg) }
func (l pionLogger) Warnf(format string, a ...any)  { l.debugf("warn", format, a...) }
func (l pionLogger) Error(msg string)               { l.debug("error", msg) }
func (l pionLogger) Errorf(format string, a ...any) { l.debugf("error", format, a...) }
