"""Classification: language id, the AI-mention gate, the fastText trope model and the policy."""
