"""Max and average pooling (window and adaptive), forward and gather-form backward."""
