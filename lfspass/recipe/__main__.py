"""python -m lfspass.recipe: regenerate the table in docs/reference/recipe.md."""
from lfspass.recipe import REPO, Recipe
from lfspass.schema import reference_main

raise SystemExit(reference_main(REPO / "docs" / "reference" / "recipe.md", Recipe))
