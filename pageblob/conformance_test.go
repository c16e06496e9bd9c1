package pageblob

import (
	"context"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
)

// TestConformance runs disktest's checker on page blobs on Azurite.
func TestConformance(t *testing.T) {
	disktest.TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
		o, _ := testOptions(t)
		o.CreateSize = size
		b, err := OpenTarget(ctx, az.BlobURL(testContainer, blobName(t)), o)
		if err != nil {
			return nil, nil, err
		}
		return b, func() { b.Close() }, nil
	})
}
