package disktest

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/deltasync/deltasync/disk"
)

// ReadAll reads the whole of src: its Size bytes.
func ReadAll(ctx context.Context, src disk.Source) ([]byte, error) {
	p := make([]byte, src.Size())
	n, err := disk.ReadAt(ctx, src, p, 0)
	if err != nil && !(err == io.EOF && n == len(p)) {
		return nil, fmt.Errorf("disktest: read %d of %d bytes: %w", n, len(p), err)
	}
	return p, nil
}

// SameBytes returns nil when src holds exactly want, or an error that
// names the first byte that differs and both sizes.
func SameBytes(ctx context.Context, src disk.Source, want []byte) error {
	got, err := ReadAll(ctx, src)
	if err != nil {
		return err
	}
	if bytes.Equal(got, want) {
		return nil
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Errorf("disktest: differs first at byte %d (sizes %d, want %d)", i, len(got), len(want))
}
