"""File imports: merchants' order exports read and admitted through the same door as webhooks."""
