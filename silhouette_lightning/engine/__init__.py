"""The Lightning shell: the LightningModule, the data module, callbacks and the summing DDP strategy."""
