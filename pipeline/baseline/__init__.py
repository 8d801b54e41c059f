"""The shortcut baseline: simple per-crop features and a logistic regression, scored like the
backbones, so every run answers "could something simpler explain this?"."""
