"""What a trained model is worth: OA/AA and confusion, the paired tests and seed-pooled intervals,
the linear probes, and Grad-CAM++ explanations."""
