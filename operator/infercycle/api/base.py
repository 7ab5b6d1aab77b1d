"""Shared configuration of every resource model: frozen, camelCase on the wire, strict keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A frozen model that reads and writes the camelCase field names of the Kubernetes API."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
    )

    def to_api(self) -> dict[str, object]:
        """The wire form: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
