"""Configuration read from the environment: a value that cannot be used is refused at start, by its name."""

from __future__ import annotations

import pytest

from mechamental.settings import ConfigurationError, Settings


@pytest.mark.parametrize("name", ["MECHAMENTAL_OUTBOUND_ALLOW", "MECHAMENTAL_OUTBOUND_DENY"])
def test_an_outbound_network_that_is_not_cidr_is_refused_naming_its_variable(name):
    with pytest.raises(ConfigurationError, match=f"{name}: 'intranet' is not a network"):
        Settings.from_env({name: "10.0.0.0/8, intranet"})


def test_outbound_networks_are_read_as_a_comma_separated_list():
    settings = Settings.from_env({"MECHAMENTAL_OUTBOUND_ALLOW": "127.0.0.0/8, ::1/128,"})
    assert settings.outbound_allow == ["127.0.0.0/8", "::1/128"]
    assert settings.outbound_deny == []
