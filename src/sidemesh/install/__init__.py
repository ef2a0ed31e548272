"""What `sidemesh install` creates, as pure data: values, manifests, webhooks, tags."""
