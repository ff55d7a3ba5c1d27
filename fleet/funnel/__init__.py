"""Pure funnel logic: offers and prices in cents, placeholders, the callback codec, what a
step sends. No aiogram and no I/O here: handlers and scheduler jobs share it."""
