package transfer

import (
	"context"
	"errors"
	"fmt"

	"github.com/deltasync/deltasync/disk"
)

// checkSource fails the run if the source changed since it started,
// unless AllowLive; a changed source also invalidates the journal.
func (r *run) checkSource(ctx context.Context) error {
	var why string
	if n := r.src.Size(); n != r.srcSize {
		why = fmt.Sprintf("size %d became %d", r.srcSize, n)
	} else if v, ok := r.src.(disk.Versioner); ok {
		ver, err := v.Version(ctx)
		if err != nil {
			return fmt.Errorf("transfer: reading the source's version: %w", err)
		}
		if ver != r.srcVersion {
			why = fmt.Sprintf("version %q became %q", r.srcVersion, ver)
		}
	}
	if why == "" {
		return nil
	}
	r.st.SourceChanged = true
	if r.c.AllowLive {
		return nil
	}
	err := fmt.Errorf("%w: %s", ErrSourceChanged, why)
	if r.store != nil {
		if derr := r.store.Delete(ctx, r.key); derr != nil {
			err = errors.Join(err, fmt.Errorf("transfer: removing journal %s: %w", r.key, derr))
		}
	}
	return err
}
